#!/usr/bin/env bash
# Removes the kind e2e environment: the cluster (its node containers), the
# Kafka, dynalite and moto it ran, and the dockerd it started, if it started
# one. Built images and caches stay, so the next `make kind-up` is quick.
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/host.sh
source "$KIND_DIR/lib/host.sh"

rm -f "$KIND_ENV_FILE"
if docker_works && [[ -x $KIND_TOOLS/bin/kind ]]; then
    if kind_cli get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
        klog "deleting kind cluster $KIND_CLUSTER"
        kind_cli delete cluster --name "$KIND_CLUSTER" >>"$KIND_LOGS/kind-delete.log" 2>&1 ||
            die "kind delete cluster failed (log: $KIND_LOGS/kind-delete.log)"
    fi
fi
"$TESTENV_DIR/down.sh"
stop_docker
klog "kind environment removed (logs kept in $KIND_LOGS)"
