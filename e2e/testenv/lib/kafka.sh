# shellcheck shell=bash
# Apache Kafka: one KRaft node that is both broker and controller, run on the
# machine's Java 17 from the Maven Central jars that kafka/pom.xml resolves.
# Three client listeners: PLAINTEXT (most tests), SASL_PLAINTEXT (SASL PLAIN and
# SCRAM-SHA-512 users) and SSL (TLS with client certificates required: mTLS),
# whose certificates and passwords are made anew at each start.

KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"

# Users of the SASL listener (PLAIN: in the broker's JAAS config; SCRAM-SHA-512: in
# the cluster metadata).
KAFKA_SASL_PLAIN_USER=prapi-plain
KAFKA_SASL_SCRAM_USER=prapi-scram

install_kafka() {
    local pom="$TESTENV_DIR/kafka/pom.xml" stamp
    stamp="$(inputs_hash "$pom")"
    if [[ -f $KAFKA_HOME/.installed && $(<"$KAFKA_HOME/.installed") == "$stamp" ]]; then
        return 0
    fi
    need_cmd java mvn
    grep -q "<kafka.version>$KAFKA_VERSION</kafka.version>" "$pom" ||
        die "kafka/pom.xml does not pin KAFKA_VERSION=$KAFKA_VERSION from versions.env"
    # A running instance uses the files about to be replaced.
    stop_component kafka
    log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME"
    rm -rf "$KAFKA_HOME"
    mkdir -p "$KAFKA_HOME"
    run_logged kafka-install mvn -B -q -f "$pom" \
        -Dmaven.repo.local="$CACHE_DIR/m2" \
        dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$KAFKA_HOME/libs"
    echo "$stamp" >"$KAFKA_HOME/.installed"
}

kafka_java() {
    java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$STATE_DIR/kafka/log4j2.properties" \
        -cp "$KAFKA_HOME/libs/*" "$@"
}

start_kafka() {
    if is_running kafka; then
        log "kafka is already running"
        return 0
    fi
    local dir="$STATE_DIR/kafka" port sasl_port tls_port controller_port cluster_id
    local plain_password scram_password
    port="$(pick_port kafka)"
    sasl_port="$(pick_port kafka-sasl)"
    tls_port="$(pick_port kafka-tls)"
    controller_port="$(pick_port kafka-controller)"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    kafka_certificates "$dir/tls"
    plain_password="$(random_secret)"
    scram_password="$(random_secret)"
    # Read back by kafka_env; the directory is the environment's own.
    printf '%s\n%s\n' "$plain_password" "$scram_password" >"$dir/sasl-passwords"
    chmod 600 "$dir/sasl-passwords"
    cat >"$dir/log4j2.properties" <<EOP
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
EOP
    # Settings for fast tests on one node; see docs/development.md.
    cat >"$dir/server.properties" <<EOP
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$BIND_HOST:$controller_port
listeners=PLAINTEXT://$BIND_HOST:$port,SASL_PLAINTEXT://$BIND_HOST:$sasl_port,SSL://$BIND_HOST:$tls_port,CONTROLLER://$BIND_HOST:$controller_port
advertised.listeners=PLAINTEXT://$BIND_HOST:$port,SASL_PLAINTEXT://$BIND_HOST:$sasl_port,SSL://$BIND_HOST:$tls_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_PLAIN_USER="$plain_password";
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.crt
ssl.client.auth=required
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=500
group.consumer.min.session.timeout.ms=1000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
num.network.threads=2
num.io.threads=4
background.threads=4
log.retention.hours=-1
EOP
    # Kafka's own ids never start with "-", which would read as an option.
    cluster_id="$(python3 -c '
import base64, uuid
while True:
    i = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not i.startswith("-"):
        print(i)
        break
')"
    # SCRAM users live in the cluster metadata, written when the storage is formatted.
    run_logged kafka kafka_java kafka.tools.StorageTool format \
        --cluster-id "$cluster_id" --config "$dir/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=$KAFKA_SASL_SCRAM_USER,password=$scram_password]"
    log "starting kafka on $BIND_HOST:$port"
    start_bg kafka "$dir/server.properties" \
        java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
}

kafka_ready() {
    local name
    grep -q 'Kafka Server started' "$LOG_DIR/kafka.log" || return 1
    for name in kafka kafka-sasl kafka-tls; do
        (exec 3<>"/dev/tcp/$BIND_HOST/$(recorded_port "$name")") 2>/dev/null || return 1
    done
}

wait_kafka() {
    wait_healthy kafka 180 kafka_ready
}

kafka_env() {
    local dir="$STATE_DIR/kafka" plain_password scram_password
    { read -r plain_password && read -r scram_password; } <"$dir/sasl-passwords"
    echo "export KAFKA_BOOTSTRAP_SERVERS='$BIND_HOST:$(recorded_port kafka)'"
    echo "export KAFKA_SASL_BOOTSTRAP_SERVERS='$BIND_HOST:$(recorded_port kafka-sasl)'"
    echo "export KAFKA_SASL_PLAIN_USERNAME='$KAFKA_SASL_PLAIN_USER'"
    echo "export KAFKA_SASL_PLAIN_PASSWORD='$plain_password'"
    echo "export KAFKA_SASL_SCRAM_USERNAME='$KAFKA_SASL_SCRAM_USER'"
    echo "export KAFKA_SASL_SCRAM_PASSWORD='$scram_password'"
    echo "export KAFKA_TLS_BOOTSTRAP_SERVERS='$BIND_HOST:$(recorded_port kafka-tls)'"
    echo "export KAFKA_TLS_CA_FILE='$dir/tls/ca.crt'"
    echo "export KAFKA_TLS_CERT_FILE='$dir/tls/client.crt'"
    echo "export KAFKA_TLS_KEY_FILE='$dir/tls/client.key'"
}

# A password for one run: 32 hex characters (no quoting trouble in the JAAS config).
random_secret() {
    python3 -c 'import secrets; print(secrets.token_hex(16))'
}

# kafka_certificates DIR: a CA valid for a week, the broker's certificate for
# BIND_HOST (IP SAN: clients verify the host name) and a client certificate, all
# signed by it: EC P-256 keys in PKCS#8, the form Kafka's PEM key store reads.
# server.pem is the broker's key and certificate in one file (its key store).
kafka_certificates() {
    local out="$1"
    ensure_cmd_from_apt openssl openssl
    mkdir -p "$out"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$out/ca.key" -out "$out/ca.crt" -days 7 \
        -subj "/CN=prapi-testenv-kafka-ca" 2>/dev/null
    MKCERT_DIR="$out" mkcert server prapi-testenv-kafka "" serverAuth "IP:$BIND_HOST,DNS:localhost"
    MKCERT_DIR="$out" mkcert client prapi-testenv-client "" clientAuth
    cat "$out/server.key" "$out/server.crt" >"$out/server.pem"
    chmod 600 "$out"/*.key "$out/server.pem"
}
