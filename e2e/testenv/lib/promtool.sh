# shellcheck shell=bash
# promtool, Prometheus' rule checker and rule unit-test runner, built from the
# Go module proxy through the wrapper module in e2e/testenv/promtool (its
# go.mod/go.sum pin everything), for the chart's alerting rules
# (charts/prapi-operator/files/prometheus-rules.yaml). Cached in
# CACHE_DIR/promtool-<version>, rebuilt when the wrapper module changes. Built without
# Prometheus' service discovery plugins (promtool/_trim says why).

PROMTOOL_HOME="$CACHE_DIR/promtool-$PROMTOOL_VERSION"
PROMTOOL="$PROMTOOL_HOME/bin/promtool"

install_promtool() {
    need_cmd go
    grep -Eq "^require github.com/prometheus/prometheus $PROMTOOL_VERSION\$" "$TESTENV_DIR/promtool/go.mod" ||
        die "promtool/go.mod does not require github.com/prometheus/prometheus $PROMTOOL_VERSION"
    local stamp
    stamp="$(wrapper_hash "$TESTENV_DIR/promtool") $(go version)"
    if [[ -x $PROMTOOL && -f $PROMTOOL_HOME/.installed && $(<"$PROMTOOL_HOME/.installed") == "$stamp" ]]; then
        return
    fi
    log "building promtool (Prometheus module $PROMTOOL_VERSION) into $PROMTOOL_HOME/bin (cold: minutes)"
    rm -rf "$PROMTOOL_HOME"
    mkdir -p "$PROMTOOL_HOME/bin"
    local modfile
    modfile="$(go_trim_modfile "$TESTENV_DIR/promtool" github.com/prometheus/prometheus)"
    (cd "$TESTENV_DIR/promtool" && run_logged promtool-build env CGO_ENABLED=0 go build -modfile="$modfile" -trimpath -ldflags='-s -w' \
        -o "$PROMTOOL_HOME/bin/" github.com/prometheus/prometheus/cmd/promtool)
    echo "$stamp" >"$PROMTOOL_HOME/.installed"
}
