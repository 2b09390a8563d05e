#!/usr/bin/env bash
# Runs a command against the kind e2e environment: brings it up (e2e/kind/up.sh),
# runs the command with target/kind/env sourced and PRAPI_REQUIRE_KIND=1 (the
# e2e suite fails instead of skipping), prints the cluster's state when the
# command failed, then removes the environment (also when something failed).
# Exits with the command's status. PRAPI_KEEP_KIND=1 leaves it running.
#
#   e2e/kind/with-kind.sh cargo test -p prapi-e2e --test kind
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${PRAPI_KIND_DIR:-$here/../../target/kind}"

(($# > 0)) || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

stop() {
    if [[ ${PRAPI_KEEP_KIND:-0} != 1 ]]; then
        "$here/down.sh" || echo "[kind] warning: removing the kind environment failed" >&2
    fi
}
trap stop EXIT

"$here/up.sh"

status=0
(
    set -a
    # shellcheck source=/dev/null
    source "$state/env"
    set +a
    export PRAPI_REQUIRE_KIND=1
    exec "$@"
) || status=$?
if ((status != 0)); then
    echo "[kind] the command failed ($status); the cluster's state follows" >&2
    (
        # shellcheck source=/dev/null
        source "$state/env"
        kubectl get nodes -o wide
        kubectl get pods,deploy,svc,hpa -A -o wide
        kubectl get marketgroups -A -o yaml
        kubectl get routegroups -A -o yaml
        kubectl -n "$PRAPI_OPERATOR_NAMESPACE" logs -l app.kubernetes.io/name=prapi-operator --tail=100 --prefix
        kubectl get events -A --sort-by=.lastTimestamp | tail -n 60
    ) >&2 2>&1 || true
fi
exit "$status"
