#!/bin/bash
# One Kafka node in KRaft mode (process.roles=broker,controller), configured from the environment:
#   KAFKA_ADVERTISED_HOST  the name clients reach it by, e.g. the Service's DNS name (default: the hostname)
#   KAFKA_PORT             the client listener (PLAINTEXT, all addresses; default 9092)
#   KAFKA_CONTROLLER_PORT  the KRaft controller listener (127.0.0.1; default 9093)
#   KAFKA_LOCAL_PORT       a loopback listener for tools in the container and inter-broker traffic, so
#                          they never depend on the advertised name resolving (127.0.0.1; default 9094)
#   KAFKA_CLUSTER_ID       (default: a fixed id), KAFKA_LOG_DIRS (default /var/lib/kafka/data)
#   KAFKA_NUM_PARTITIONS   default partitions of a topic (default 3)
#   KAFKA_HEAP_OPTS        JVM heap options (default -Xms256m -Xmx512m)
#   KAFKA_LOG_LEVEL        root log level (default WARN; the "started" line is always logged)
#   KAFKA_CFG_<NAME>       any broker setting: KAFKA_CFG_LOG_RETENTION_MS=1000 -> log.retention.ms=1000
#   KAFKA_TOPICS           topics to create once the broker answers, space-separated
#                          name:partitions[:cleanup.policy], e.g. "raw-events:3 products:1:compact"
#   KAFKA_READY_FILE       written once the broker answers and the topics exist
#                          (default /var/lib/kafka/topics-ready: a readiness probe can test it)
# Storage is formatted on the first start (kafka.tools.StorageTool format --ignore-formatted).
# With arguments, runs them instead (e.g. kafka-topics ...).
set -eo pipefail
[ $# -eq 0 ] || exec "$@"

log() { echo "kafka-entrypoint: $*" >&2; }

port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-9093}
local_port=${KAFKA_LOCAL_PORT:-9094}
advertised=${KAFKA_ADVERTISED_HOST:-$(cat /proc/sys/kernel/hostname)}
cluster_id=${KAFKA_CLUSTER_ID:-c2hvcHN0cmVhbS10ZXN0MQ}
log_dirs=${KAFKA_LOG_DIRS:-/var/lib/kafka/data}
ready=${KAFKA_READY_FILE:-/var/lib/kafka/topics-ready}
home=${KAFKA_HOME:-/opt/kafka}
conf=${KAFKA_CONFIG_DIR:-$home/config}
[ -w "$conf" ] || conf=$(mktemp -d)
java=${JAVA_HOME:+$JAVA_HOME/bin/}java

rm -f "$ready"
# shellcheck disable=SC2086  # a comma-separated list
mkdir -p ${log_dirs//,/ }

# The settings of jobs/shopstream/events/broker.py, with container listeners.
cat >"$conf/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://0.0.0.0:$port,CONTROLLER://127.0.0.1:$controller_port,LOCAL://127.0.0.1:$local_port
advertised.listeners=PLAINTEXT://$advertised:$port,LOCAL://127.0.0.1:$local_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=LOCAL
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,LOCAL:PLAINTEXT
log.dirs=$log_dirs
num.partitions=${KAFKA_NUM_PARTITIONS:-3}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=-1
PROPS
while IFS='=' read -r name value; do
  key=$(tr 'A-Z_' 'a-z.' <<<"${name#KAFKA_CFG_}")
  sed -i "/^${key//./\\.}=/d" "$conf/server.properties"
  echo "$key=$value" >>"$conf/server.properties"
done < <(env | grep -E '^KAFKA_CFG_[A-Z0-9_]+=' || true)

cat >"$conf/log4j2.properties" <<LOG4J
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${KAFKA_LOG_LEVEL:-WARN}
rootLogger.appenderRef.console.ref = console
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
LOG4J

jvm=("$java" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
     -Dlog4j2.configurationFile="$conf/log4j2.properties" -cp "$home/libs/*")

"${jvm[@]}" kafka.tools.StorageTool format --cluster-id="$cluster_id" -c "$conf/server.properties" --ignore-formatted >&2

create_topics() {
  local tools=(kafka-topics --bootstrap-server "127.0.0.1:$local_port") spec name partitions policy args
  until "${tools[@]}" --list >/dev/null 2>&1; do
    sleep 2
  done
  for spec in $KAFKA_TOPICS; do
    IFS=: read -r name partitions policy <<<"$spec"
    args=(--create --if-not-exists --topic "$name" --partitions "${partitions:-${KAFKA_NUM_PARTITIONS:-3}}" --replication-factor 1)
    [ -z "$policy" ] || args+=(--config "cleanup.policy=$policy")
    until "${tools[@]}" "${args[@]}" >/dev/null; do
      log "creating topic $name failed; retrying"
      sleep 3
    done
  done
  touch "$ready"
  log "broker answers on $advertised:$port; topics: ${KAFKA_TOPICS:-none requested}"
}
create_topics &

exec "${jvm[@]}" kafka.Kafka "$conf/server.properties"
