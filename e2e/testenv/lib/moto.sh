# shellcheck shell=bash
# moto server (in its own venv) for Application Auto Scaling.

MOTO_HOME="$CACHE_DIR/moto-$MOTO_VERSION"

install_moto() {
    local req="$TESTENV_DIR/moto/requirements.txt" stamp
    stamp="$(inputs_hash "$req")"
    if [[ -f $MOTO_HOME/.installed && $(<"$MOTO_HOME/.installed") == "$stamp" ]]; then
        return 0
    fi
    need_cmd python3
    grep -q "^moto==$MOTO_VERSION\$" "$req" ||
        die "moto/requirements.txt does not pin MOTO_VERSION=$MOTO_VERSION from versions.env"
    # A running instance uses the files about to be replaced.
    stop_component moto
    log "installing moto $MOTO_VERSION from PyPI into $MOTO_HOME"
    rm -rf "$MOTO_HOME"
    run_logged moto-install python3 -m venv "$MOTO_HOME"
    run_logged moto-install "$MOTO_HOME/bin/pip" install --quiet --no-input \
        --cache-dir "$CACHE_DIR/pip" -r "$req"
    echo "$stamp" >"$MOTO_HOME/.installed"
}

start_moto() {
    if is_running moto; then
        log "moto is already running"
        return 0
    fi
    local port
    port="$(pick_port moto)"
    log "starting moto server on $BIND_HOST:$port"
    start_bg moto "-p $port" "$MOTO_HOME/bin/moto_server" -H "$BIND_HOST" -p "$port"
}

moto_ready() {
    curl -fsS "http://$BIND_HOST:$(recorded_port moto)/moto-api/data.json" >/dev/null
}

wait_moto() {
    wait_healthy moto 90 moto_ready
}

moto_env() {
    echo "export AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING='http://$BIND_HOST:$(recorded_port moto)'"
}
