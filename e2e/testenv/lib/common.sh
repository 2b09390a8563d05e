# shellcheck shell=bash
# Shared helpers of the test environment scripts: paths, versions, logging,
# free ports, starting processes in the background and stopping them by PID,
# health checks with deadlines. Sourced, never run.

TESTENV_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_ROOT="$(cd "$TESTENV_DIR/../.." && pwd)"
# Everything of one running environment lives under target/testenv of the
# checkout it was started from, so several worktrees can each run their own.
STATE_DIR="${PRAPI_TESTENV_DIR:-$REPO_ROOT/target/testenv}"
LOG_DIR="$STATE_DIR/logs"
PID_DIR="$STATE_DIR/pids"
PORT_DIR="$STATE_DIR/ports"
ENV_FILE="$STATE_DIR/env"
# Address the services (Kafka, dynalite, moto) listen on and advertise: loopback
# for the test environment; the kind environment (e2e/kind) runs its own set on
# the kind network's gateway, which both this host and the cluster's pods reach.
BIND_HOST="${PRAPI_TESTENV_HOST:-127.0.0.1}"
# Built and downloaded components, keyed by exact version, shared by all checkouts.
CACHE_DIR="${PRAPI_CACHE_DIR:-$HOME/.cache/prapi}"

# shellcheck source=../versions.env
source "$TESTENV_DIR/versions.env"

# Go builds use their own module and build caches under CACHE_DIR, so removing
# CACHE_DIR really means a cold build, and the machine's Go toolchain is used
# as it is (never a downloaded one). The caches are kept (a few GB; Go trims
# build entries unused for days): every Go build here (Kubernetes, kwok, helm,
# promtool, kind, CoreDNS, Skipper, kubeconform) compiles the standard library
# and shares dependencies, so each later build, and a rebuild after a pin
# changes, starts warm.
export GOMODCACHE="$CACHE_DIR/go/mod"
export GOCACHE="$CACHE_DIR/go/build"
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false -mod=readonly"

log() {
    printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    printf '[testenv] error: %s\n' "$*" >&2
    exit 1
}

need_cmd() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is required but not installed"
    done
}

# Installs Debian packages when a command is missing (fresh CI machines).
ensure_cmd_from_apt() {
    local cmd="$1" pkg="$2"
    if command -v "$cmd" >/dev/null 2>&1; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "'$cmd' is missing and apt-get is not available to install $pkg"
    log "installing $pkg (for $cmd) with apt-get"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$pkg" >/dev/null
    command -v "$cmd" >/dev/null 2>&1 || die "installing $pkg did not provide '$cmd'"
}

# Prints a TCP port on BIND_HOST that is free right now.
free_port() {
    python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1]); s.close()' "$BIND_HOST"
}

port_is_free() {
    python3 - "$1" "$BIND_HOST" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[2], int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

# Port of NAME for this environment: the one used before if still free (so a
# restarted component keeps its address), a new free one otherwise.
pick_port() {
    local name="$1" file="$PORT_DIR/$1" port
    mkdir -p "$PORT_DIR"
    if [[ -s $file ]]; then
        port="$(<"$file")"
        if port_is_free "$port"; then
            echo "$port"
            return 0
        fi
    fi
    port="$(free_port)"
    echo "$port" >"$file"
    echo "$port"
}

# Port recorded for NAME by pick_port (empty when none).
recorded_port() {
    local file="$PORT_DIR/$1"
    if [[ -s $file ]]; then
        cat "$file"
    fi
}

# Starts a long-running process in the background, in its own session (so a
# Ctrl-C in the terminal that ran `make testenv` does not reach it), with its
# output appended to logs/NAME.log. The PID is recorded in pids/NAME.pid
# together with MARKER, a string its command line must contain, so that a PID
# reused by an unrelated process is never taken for ours.
start_bg() {
    local name="$1" marker="$2"
    shift 2
    mkdir -p "$LOG_DIR" "$PID_DIR"
    printf '\n===== %s starting: %s\n' "$(date -Is)" "$*" >>"$LOG_DIR/$name.log"
    setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    local pid=$! i
    printf '%s\n%s\n' "$pid" "$marker" >"$PID_DIR/$name.pid"
    # Until the child has exec'd the command, its command line is this script's, and
    # running_pid would take it for gone: a health check right after the start then
    # reported "the process exited" for a kube-apiserver that was starting. Wait for the
    # exec (bounded), or for the child to end.
    for ((i = 0; i < 100; i++)); do
        is_running "$name" && return 0
        [[ -d /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 0
        sleep 0.05
    done
}

# PID of NAME if that process is alive and still the one we started.
running_pid() {
    local file="$PID_DIR/$1.pid" pid marker
    [[ -s $file ]] || return 1
    { read -r pid && read -r marker; } <"$file" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    # Zombies (exited, not yet reaped) count as dead.
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker" || return 1
    echo "$pid"
}

is_running() {
    running_pid "$1" >/dev/null
}

# Stops NAME by its recorded PID: SIGTERM, then SIGKILL after a grace period.
stop_component() {
    local name="$1" grace="${2:-20}" pid i
    if pid="$(running_pid "$name")"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            [[ -d /proc/$pid ]] || break
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || break
            sleep 0.1
        done
        if [[ -d /proc/$pid ]] && is_running "$name"; then
            log "$name did not stop within ${grace}s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$PID_DIR/$name.pid"
}

# Says which component failed, where its log is and its last lines; exits.
fail_component() {
    local name="$1" why="$2" log_file="$LOG_DIR/$1.log"
    {
        printf '\n[testenv] %s failed to start: %s\n' "$name" "$why"
        printf '[testenv] log: %s\n' "$log_file"
        if [[ -f $log_file ]]; then
            printf '[testenv] last lines of the log:\n'
            tail -n 40 "$log_file" | sed 's/^/    /'
        fi
        printf '[testenv] the rest is left running for debugging; stop it with: make testenv-down\n'
    } >&2
    exit 1
}

# wait_healthy NAME DEADLINE_SECONDS CMD...: runs CMD until it succeeds. Fails
# the component when its process dies or the deadline passes.
wait_healthy() {
    local name="$1" deadline="$2"
    shift 2
    local start=$SECONDS
    while true; do
        if "$@" >/dev/null 2>&1; then
            log "$name is ready ($((SECONDS - start))s)"
            return 0
        fi
        if ! is_running "$name"; then
            fail_component "$name" "the process exited"
        fi
        if ((SECONDS - start >= deadline)); then
            fail_component "$name" "not healthy within ${deadline}s (check: $*)"
        fi
        sleep 0.5
    done
}

# Runs a setup step with its output in logs/NAME.log; on failure shows it.
run_logged() {
    local name="$1"
    shift
    mkdir -p "$LOG_DIR"
    printf '\n===== %s: %s\n' "$(date -Is)" "$*" >>"$LOG_DIR/$name.log"
    if ! "$@" >>"$LOG_DIR/$name.log" 2>&1; then
        fail_component "$name" "command failed: $*"
    fi
}

# mkcert NAME CN O EXT_KEY_USAGE [SAN]: an ECDSA key and a certificate signed
# by a CA of the directory $MKCERT_DIR (default: the Kubernetes PKI_DIR), the
# CA being $MKCERT_CA.crt/.key there (default ca).
mkcert() {
    local name="$1" cn="$2" org="$3" eku="$4" san="${5:-}" ca="${MKCERT_CA:-ca}" subj ext
    local dir="${MKCERT_DIR:-$PKI_DIR}"
    subj="/CN=$cn"
    [[ -z $org ]] || subj="/O=$org/CN=$cn"
    ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$eku"
    [[ -z $san ]] || ext+=$'\n'"subjectAltName=$san"
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "$subj" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" \
        -set_serial "0x$(openssl rand -hex 12)" -days 3650 -out "$dir/$name.crt" \
        -extfile <(printf '%s\n' "$ext") 2>/dev/null
    rm -f "$dir/$name.csr"
}

# Content hash of files, to tell whether a cached build matches the inputs.
inputs_hash() {
    cat "$@" | sha256sum | cut -c1-16
}

# wrapper_hash DIR: content hash of a Go wrapper module (its go.mod, go.sum, and every file
# under it, _trim included), the key of what is built from it.
wrapper_hash() {
    local dir="$1"
    (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

# go_module_dir DIR MODULE[@VERSION]: MODULE's directory in the module cache (downloaded if
# needed), at the version the module in DIR pins when no version is given.
go_module_dir() {
    (cd "$1" && go mod download -json "$2" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
}

# go_trim_modfile WRAPPER_DIR MODULE: the go.mod to build WRAPPER_DIR's tool with
# (`go build -modfile=...`). When WRAPPER_DIR/_trim holds files, MODULE (at the version the
# wrapper pins) is copied out of the module cache with those files laid over it (paths
# relative to the module root; the copy is cached by the wrapper's hash), and a copy of the
# wrapper's go.mod, written anew each time so that it names where the copy is now, replaces
# MODULE with it; otherwise the wrapper's own go.mod. (go build -overlay refuses files in the
# module cache, hence the copy.) Go directories whose name starts with "_" are never packages
# of the wrapper itself.
go_trim_modfile() {
    local wrapper="$1" module="$2" src dir
    if [[ ! -d $wrapper/_trim ]]; then
        echo "$wrapper/go.mod"
        return
    fi
    dir="$CACHE_DIR/go/trimmed/$(basename "$wrapper")-$(wrapper_hash "$wrapper")"
    if [[ ! -f $dir/module/.done ]]; then
        src="$(go_module_dir "$wrapper" "$module")" ||
            die "go mod download $module failed (in $wrapper)"
        rm -rf "$dir"
        mkdir -p "$dir"
        cp -r "$src" "$dir/module"
        chmod -R u+w "$dir/module"
        cp -r "$wrapper/_trim/." "$dir/module/"
        touch "$dir/module/.done"
    fi
    cp "$wrapper/go.mod" "$wrapper/go.sum" "$dir/"
    printf '\nreplace %s => %s\n' "$module" "$dir/module" >>"$dir/go.mod"
    echo "$dir/go.mod"
}
