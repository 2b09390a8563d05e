# shellcheck shell=bash
# Apache Kafka: one KRaft node that is both broker and controller, run on the
# machine's Java 17 from the Maven Central jars that kafka/pom.xml resolves.

KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"

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
    local dir="$STATE_DIR/kafka" port controller_port cluster_id
    port="$(pick_port kafka)"
    controller_port="$(pick_port kafka-controller)"
    rm -rf "$dir"
    mkdir -p "$dir/data"
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
listeners=PLAINTEXT://$BIND_HOST:$port,CONTROLLER://$BIND_HOST:$controller_port
advertised.listeners=PLAINTEXT://$BIND_HOST:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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
    run_logged kafka kafka_java kafka.tools.StorageTool format \
        --cluster-id "$cluster_id" --config "$dir/server.properties"
    log "starting kafka on $BIND_HOST:$port"
    start_bg kafka "$dir/server.properties" \
        java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
}

kafka_ready() {
    local port
    port="$(recorded_port kafka)"
    grep -q 'Kafka Server started' "$LOG_DIR/kafka.log" &&
        (exec 3<>"/dev/tcp/$BIND_HOST/$port") 2>/dev/null
}

wait_kafka() {
    wait_healthy kafka 180 kafka_ready
}

kafka_env() {
    echo "export KAFKA_BOOTSTRAP_SERVERS='$BIND_HOST:$(recorded_port kafka)'"
}
