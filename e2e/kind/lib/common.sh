# shellcheck shell=bash
# Shared by the kind environment's scripts (e2e/kind/*.sh): paths, versions and
# the test environment's helpers (logging, background processes by PID, input
# hashes), which this reuses rather than repeats. Sourced, never run.

KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The kind environment runs its own Kafka, dynalite and moto (bound to the kind
# network's gateway) with the test environment's scripts, in its own state dir.
export PRAPI_TESTENV_DIR="${PRAPI_KIND_DIR:-$(cd "$KIND_DIR/../.." && pwd)/target/kind}/services"
# shellcheck source=../../testenv/lib/common.sh
source "$KIND_DIR/../testenv/lib/common.sh"
# shellcheck source=../versions.env
source "$KIND_DIR/versions.env"
# Several checkouts can each run a cluster of their own (PRAPI_KIND_CLUSTER=another-name).
KIND_CLUSTER="${PRAPI_KIND_CLUSTER:-$KIND_CLUSTER}"

KIND_STATE="${PRAPI_KIND_DIR:-$REPO_ROOT/target/kind}"
KIND_LOGS="$KIND_STATE/logs"
KIND_ENV_FILE="$KIND_STATE/env"
KIND_TOOLS="$CACHE_DIR/kind-tools"
KUBECONFIG_FILE="$KIND_STATE/kubeconfig"
# Names of everything the environment creates, so that it is removed by name.
RELEASE=prapi-operator
OPERATOR_NAMESPACE=prapi-system
SKIPPER_NAMESPACE=skipper

klog() {
    printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# step NAME CMD...: runs a setup step with its output in logs/NAME.log; on
# failure prints the log's tail and fails.
step() {
    local name="$1"
    shift
    mkdir -p "$KIND_LOGS"
    printf '\n===== %s: %s\n' "$(date -Is)" "$*" >>"$KIND_LOGS/$name.log"
    if ! "$@" >>"$KIND_LOGS/$name.log" 2>&1; then
        printf '[kind] error: %s failed: %s\n[kind] log: %s\n' "$name" "$*" "$KIND_LOGS/$name.log" >&2
        tail -n 40 "$KIND_LOGS/$name.log" | sed 's/^/    /' >&2
        exit 1
    fi
}

kind_kubectl() {
    "$K8S_BIN/kubectl" --kubeconfig="$KUBECONFIG_FILE" "$@"
}

kind_cli() {
    "$KIND_TOOLS/bin/kind" "$@"
}
