#!/usr/bin/env bash
# Starts the test environment (what is not running yet) and writes
# target/testenv/env. See docs/development.md.
#
#   e2e/testenv/up.sh                 everything
#   e2e/testenv/up.sh kafka dynalite  only these (kafka, dynalite, moto, k8s)
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/kafka.sh
source "$TESTENV_DIR/lib/kafka.sh"
# shellcheck source=lib/dynalite.sh
source "$TESTENV_DIR/lib/dynalite.sh"
# shellcheck source=lib/moto.sh
source "$TESTENV_DIR/lib/moto.sh"
# shellcheck source=lib/k8s.sh
source "$TESTENV_DIR/lib/k8s.sh"

ALL_COMPONENTS=(kafka dynalite moto k8s)
if (($# > 0)); then
    components=("$@")
else
    components=("${ALL_COMPONENTS[@]}")
fi
for c in "${components[@]}"; do
    [[ " ${ALL_COMPONENTS[*]} " == *" $c "* ]] || die "unknown component '$c' (known: ${ALL_COMPONENTS[*]})"
done
wants() {
    [[ " ${components[*]} " == *" $1 "* ]]
}

mkdir -p "$STATE_DIR" "$LOG_DIR" "$PID_DIR" "$CACHE_DIR"
need_cmd python3 curl
started=$SECONDS

# Checkouts share CACHE_DIR: one installs at a time, the others wait for it and
# then find the build done (a cold Kubernetes build is not run twice at once).
exec {install_lock}>"$CACHE_DIR/.install.lock"
if ! flock -n "$install_lock"; then
    log "another checkout is installing into $CACHE_DIR; waiting for it"
    flock "$install_lock"
fi
# Install everything first (a cold Kubernetes build takes long; nothing runs
# meanwhile), then start the light components and let them come up while the
# Kubernetes control plane starts, which waits on each of its parts itself.
wants kafka && install_kafka
wants dynalite && install_dynalite
wants moto && install_moto
wants k8s && install_k8s
flock -u "$install_lock"
wants kafka && start_kafka
wants dynalite && start_dynalite
wants moto && start_moto
wants k8s && start_k8s
wants dynalite && wait_dynalite
wants moto && wait_moto
wants kafka && wait_kafka

write_env() {
    local tmp="$ENV_FILE.tmp"
    {
        echo "# Written by e2e/testenv/up.sh at $(date -Is); source it (set -a not needed)."
        echo "export PRAPI_TESTENV=1"
        echo "export PRAPI_TESTENV_DIR='$STATE_DIR'"
        if is_running kafka; then kafka_env; fi
        if is_running dynalite; then dynalite_env; fi
        if is_running moto; then moto_env; fi
        if is_running dynalite || is_running moto; then
            echo "export AWS_REGION='us-east-1'"
            echo "export AWS_DEFAULT_REGION='us-east-1'"
            echo "export AWS_ACCESS_KEY_ID='testenv'"
            echo "export AWS_SECRET_ACCESS_KEY='testenv'"
            # No shared config/credentials files: the SDKs must use the above.
            echo "export AWS_CONFIG_FILE='/dev/null'"
            echo "export AWS_SHARED_CREDENTIALS_FILE='/dev/null'"
            echo "export AWS_EC2_METADATA_DISABLED=true"
        fi
        if k8s_is_running; then k8s_env; fi
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
}
write_env
log "test environment ready in $((SECONDS - started))s: source $ENV_FILE"
