# shellcheck shell=bash
# dynalite: DynamoDB's API on Node.js, in memory, with DynamoDB's validation
# (batch limits, duplicate keys, paging) from the npm package.

DYNALITE_HOME="$CACHE_DIR/dynalite-$DYNALITE_VERSION"

install_dynalite() {
    local src="$TESTENV_DIR/dynalite" stamp
    stamp="$(inputs_hash "$src/package.json" "$src/package-lock.json")"
    if [[ -f $DYNALITE_HOME/.installed && $(<"$DYNALITE_HOME/.installed") == "$stamp" ]]; then
        return 0
    fi
    need_cmd node npm
    grep -q "\"dynalite\": \"$DYNALITE_VERSION\"" "$src/package.json" ||
        die "dynalite/package.json does not pin DYNALITE_VERSION=$DYNALITE_VERSION from versions.env"
    # A running instance uses the files about to be replaced.
    stop_component dynalite
    log "installing dynalite $DYNALITE_VERSION from npm into $DYNALITE_HOME"
    rm -rf "$DYNALITE_HOME"
    mkdir -p "$DYNALITE_HOME"
    cp "$src/package.json" "$src/package-lock.json" "$DYNALITE_HOME/"
    run_logged dynalite-install npm ci --prefix "$DYNALITE_HOME" --no-audit --no-fund \
        --cache "$CACHE_DIR/npm"
    echo "$stamp" >"$DYNALITE_HOME/.installed"
}

start_dynalite() {
    if is_running dynalite; then
        log "dynalite is already running"
        return 0
    fi
    local port
    port="$(pick_port dynalite)"
    log "starting dynalite on $BIND_HOST:$port"
    start_bg dynalite "--port $port" \
        node "$DYNALITE_HOME/node_modules/dynalite/cli.js" --host "$BIND_HOST" --port "$port"
}

dynalite_ready() {
    curl -fsS -X POST "http://$BIND_HOST:$(recorded_port dynalite)/" \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
        -H "X-Amz-Date: $(date -u +%Y%m%dT%H%M%SZ)" \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=testenv/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
        -d '{}' | grep -q TableNames
}

wait_dynalite() {
    wait_healthy dynalite 60 dynalite_ready
}

dynalite_env() {
    echo "export AWS_ENDPOINT_URL_DYNAMODB='http://$BIND_HOST:$(recorded_port dynalite)'"
}
