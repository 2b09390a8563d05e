# shellcheck shell=bash
# The host's Docker. An existing, working Docker is used as it is. Otherwise
# Debian's docker.io is installed and a dockerd of our own is started (PID in
# the kind state dir, stopped by `make kind-down`); on hosts whose capability
# bounding set lacks capabilities that privileged containers are given, that
# dockerd runs containers through host/runc-capfix (see its docstring).

DOCKERD_STATE="$KIND_STATE/dockerd"

# Capabilities missing from this process's bounding set (empty on most hosts).
missing_capabilities() {
    python3 - <<'PY'
with open("/proc/self/status") as f:
    bnd = next(int(l.split()[1], 16) for l in f if l.startswith("CapBnd:"))
with open("/proc/sys/kernel/cap_last_cap") as f:
    last = int(f.read())
print(" ".join(str(b) for b in range(last + 1) if not bnd >> b & 1))
PY
}

docker_works() {
    docker info >/dev/null 2>&1
}

dockerd_pid() {
    local file="$DOCKERD_STATE/dockerd.pid" pid
    [[ -s $file ]] || return 1
    pid="$(<"$file")"
    [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DOCKERD_STATE/daemon.json" || return 1
    echo "$pid"
}

ensure_docker() {
    if docker_works; then
        if ! dockerd_pid >/dev/null && [[ -n $(missing_capabilities) ]] &&
            ! docker info --format '{{.DefaultRuntime}}' 2>/dev/null | grep -q capfix; then
            klog "warning: this host lacks capabilities (bits $(missing_capabilities)) and the running Docker"
            klog "  does not run containers through a wrapper that drops them; kind nodes may fail with"
            klog "  'unable to apply caps'. See docs/development.md (kind) for the runc wrapper."
        fi
        return 0
    fi
    ensure_cmd_from_apt dockerd docker.io
    ensure_cmd_from_apt iptables iptables
    mkdir -p "$DOCKERD_STATE"
    local config="$DOCKERD_STATE/daemon.json" missing
    missing="$(missing_capabilities)"
    if [[ -n $missing ]]; then
        klog "capability bits '$missing' are missing from the bounding set: dockerd runs containers through runc-capfix"
        install -m 0755 "$KIND_DIR/host/runc-capfix" "$DOCKERD_STATE/runc-capfix"
        printf '{"runtimes": {"capfix": {"path": "%s"}}, "default-runtime": "capfix"}\n' \
            "$DOCKERD_STATE/runc-capfix" >"$config"
    else
        echo '{}' >"$config"
    fi
    klog "starting dockerd (log: $KIND_LOGS/dockerd.log)"
    mkdir -p "$KIND_LOGS"
    setsid dockerd --config-file "$config" --pidfile "$DOCKERD_STATE/dockerd.pid.docker" \
        >>"$KIND_LOGS/dockerd.log" 2>&1 </dev/null &
    echo "$!" >"$DOCKERD_STATE/dockerd.pid"
    local i
    for ((i = 0; i < 120; i++)); do
        docker_works && break
        dockerd_pid >/dev/null || { tail -n 30 "$KIND_LOGS/dockerd.log" >&2; die "dockerd exited"; }
        sleep 0.5
    done
    docker_works || { tail -n 30 "$KIND_LOGS/dockerd.log" >&2; die "dockerd did not answer within 60s"; }
}

# Stops the dockerd this environment started (never one it found running).
stop_docker() {
    local pid i
    pid="$(dockerd_pid)" || return 0
    klog "stopping dockerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    [[ ! -d /proc/$pid ]] || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$DOCKERD_STATE/dockerd.pid"
}

# `docker build` with BuildKit (cache mounts in the Dockerfiles): the buildx
# plugin where there is one, else a CLI with BuildKit built in (Debian's
# docker.io 20.10 CLI at /usr/bin/docker; newer CLIs need buildx for it).
docker_build() {
    if docker buildx version >/dev/null 2>&1; then
        docker buildx build --load "$@"
    elif [[ -x /usr/bin/docker ]] && /usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then
        DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"
    else
        die "no docker CLI with BuildKit here: install the buildx plugin (docker-buildx)"
    fi
}
