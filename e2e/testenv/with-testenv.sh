#!/usr/bin/env bash
# Runs a command inside the test environment: starts it (what is not running),
# runs the command with target/testenv/env sourced and PRAPI_REQUIRE_TESTENV=1
# (integration tests fail instead of skipping), then stops the environment,
# also when starting it or the command failed. Exits with the command's status.
#
#   e2e/testenv/with-testenv.sh cargo test --workspace
#
# PRAPI_KEEP_TESTENV=1 leaves the environment running afterwards.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_file="$here/../../target/testenv/env"

(($# > 0)) || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

stop() {
    if [[ ${PRAPI_KEEP_TESTENV:-0} != 1 ]]; then
        "$here/down.sh" || echo "[testenv] warning: stopping the test environment failed" >&2
    fi
}
trap stop EXIT

"$here/up.sh"

status=0
(
    set -a
    # shellcheck source=/dev/null
    source "$env_file"
    set +a
    export PRAPI_REQUIRE_TESTENV=1
    exec "$@"
) || status=$?
exit "$status"
