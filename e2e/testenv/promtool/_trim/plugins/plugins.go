// Laid over Prometheus' generated list of service discovery plugins when promtool is built
// (go_trim_modfile in e2e/testenv/lib/common.sh). chart-check runs only `promtool check rules`
// and `promtool test rules`, which need no service discovery; the full list compiles some
// twenty cloud providers' SDKs, most of a cold build. The file and HTTP discovery that
// minimum.go registers stay.

package plugins
