// Laid over CoreDNS's generated plugin list when the kind node image's CoreDNS is built
// (go_trim_modfile in e2e/testenv/lib/common.sh): only the plugins of the Corefile kubeadm
// deploys, plus log. The full list also compiles the cloud DNS providers' SDKs (AWS, Azure,
// Google), etcd's client, dnstap and tracing, minutes of a cold build this cluster never uses.
// A directive missing here fails CoreDNS's start with "Unknown directive", never silently.

package plugin

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)
