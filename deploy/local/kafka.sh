#!/usr/bin/env bash
# A real Apache Kafka broker (single KRaft node) for the local stack and the tests, without Docker.
#   kafka.sh fetch   resolve the broker's jars from Maven Central into the cache (once per version)
#   kafka.sh start   format the storage on first use, start kafka.Kafka in the background, wait until it answers;
#                    first checks (one line each when they fail): its two ports, Java 17+, disk, and on first use
#                    Maven and the network to Maven Central
#   kafka.sh stop    stop the broker started from this checkout (and nothing else)
#   kafka.sh status  exit 0 and say so when the broker answers
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/lib.sh"
load_stack_env kafka
KAFKA_VERSION="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")}"
CACHE_DIR="${AB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/audience-bridge}"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
VAR_DIR="${AB_VAR_DIR:-$root/var}"
# The listener follows KAFKA_BOOTSTRAP_SERVERS (the services' setting; its first host:port), the controller
# KAFKA_CONTROLLER_PORT (default: that port + 1); STACK_PORT_OFFSET moves both (lib.sh, stack.py).
bootstrap="${KAFKA_BOOTSTRAP_SERVERS%%,*}"
KAFKA_PORT="${bootstrap##*:}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
DATA_DIR="$VAR_DIR/kafka/data"
CONF="$VAR_DIR/kafka/server.properties"
PIDFILE="$VAR_DIR/run/kafka.pid"
LOG="$VAR_DIR/log/kafka.log"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"

log() { printf 'kafka: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

running_pid() { pid_in "$PIDFILE"; }

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  stack_py check java maven || exit 1
  mvn_fetch "$here/kafka/pom.xml" "$LIBS" "Apache Kafka $KAFKA_VERSION" -Dkafka.version="$KAFKA_VERSION"
}

configure() {
  mkdir -p "$DATA_DIR" "$VAR_DIR/run" "$VAR_DIR/log"
  sed -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" -e "s#@LOG_DIR@#$DATA_DIR#g" \
      "$here/kafka/server.properties.template" > "$CONF"
  if [ ! -f "$DATA_DIR/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    log "formatting storage in $DATA_DIR (cluster $cluster_id)"
    java -cp "$LIBS/*" -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >>"$LOG" 2>&1
  fi
}

# The port this checkout's broker was configured with when it started (server.properties' listener).
configured_port() { sed -n 's#^listeners=PLAINTEXT://[^,]*:\([0-9]*\),.*#\1#p' "$CONF" 2>/dev/null; }

start() {
  if pid="$(running_pid)"; then
    local was; was="$(configured_port)"
    if [ -n "$was" ] && [ "$was" != "$KAFKA_PORT" ]; then
      log "this checkout's broker already runs on 127.0.0.1:$was, not $KAFKA_PORT (KAFKA_BOOTSTRAP_SERVERS): stop it first (make down), then start again"
      exit 1
    fi
    log "already running (pid $pid)"; wait_ready; return 0
  fi
  # Before anything is fetched or started: the ports (free, or a broker to use), Java, disk.
  local rc=0; stack_py port kafka >&2 || rc=$?
  case $rc in
    0) ;;
    3) log "$KAFKA_BOOTSTRAP_SERVERS already answers (a broker no checkout started): using that broker"; return 0 ;;
    4) return 0 ;;  # another checkout's broker (stack_py said so): shared by tests and benchmarks only
    *) exit 1 ;;
  esac
  stack_py port controller || exit 1
  stack_py check java disk-kafka || exit 1
  fetch
  configure
  log "starting broker on 127.0.0.1:$KAFKA_PORT (log $LOG)"
  # setsid: the broker outlives the shell that started it and gets no terminal signals (Ctrl-C in `make run`
  # is handled by stopping it explicitly).
  # The shell records its own pid, then becomes the JVM (exec): the pid file names the broker even when
  # setsid has to fork.
  rm -f "$PIDFILE"
  PIDFILE="$PIDFILE" "${WITHOUT_INHERITED_FDS[@]}" setsid sh -c 'echo $$ > "$PIDFILE"; exec "$@"' sh \
      java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -Dkafka.logs.dir="$VAR_DIR/log" \
      -cp "$LIBS/*" kafka.Kafka "$CONF" >>"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 50); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
  wait_ready
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until port_open && grep -q "Kafka Server started" "$LOG" 2>/dev/null; do
    if ! running_pid >/dev/null; then log "broker exited during start; last lines of $LOG:"; tail -n 30 "$LOG" >&2; exit 1; fi
    if [ $SECONDS -ge $deadline ]; then log "broker not ready after ${START_TIMEOUT}s"; tail -n 30 "$LOG" >&2; exit 1; fi
    sleep 0.5
  done
  log "ready on 127.0.0.1:$KAFKA_PORT"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then log "not running"; rm -f "$PIDFILE"; return 0; fi
  stop_pid "$pid" "$PIDFILE"
}

status() {
  if pid="$(running_pid)"; then
    local was; was="$(configured_port)"
    if [ -n "$was" ] && [ "$was" != "$KAFKA_PORT" ]; then echo "kafka      running  127.0.0.1:$was, not $KAFKA_PORT as set (pid $pid)"; return 1; fi
    if port_open; then echo "kafka      ready    127.0.0.1:$KAFKA_PORT (pid $pid)"; return 0; fi
  fi
  if port_open; then
    local rc=0 why; why="$(stack_py port kafka 2>&1)" || rc=$?
    if [ $rc -eq 1 ]; then echo "kafka      taken    ${why#kafka: }"; return 1; fi
    echo "kafka      ready    127.0.0.1:$KAFKA_PORT (not started from this checkout)"; return 0
  fi
  echo "kafka      stopped"; return 1
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
