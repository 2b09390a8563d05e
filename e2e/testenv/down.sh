#!/usr/bin/env bash
# Stops every process of the test environment by its recorded PID and removes
# target/testenv/env. Logs stay in target/testenv/logs for a post-mortem.
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

rm -f "$ENV_FILE"
# Dependents before what they depend on.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd kafka dynalite moto; do
    stop_component "$name"
done
log "test environment stopped (logs kept in $LOG_DIR)"
