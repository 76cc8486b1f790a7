#!/usr/bin/env bash
# Change data capture from a campaign database into the bridge, the way an ops team runs it: Debezium's Postgres
# connector in Kafka Connect standalone, reading a campaign `recipient` table and writing its change events to the
# bridge's recipient-changes topic (README "Change data capture (Debezium)").
#   connect.sh fetch     resolve Kafka Connect (the broker's own version) and Debezium's Postgres connector with
#                        their runtime dependencies from Maven Central into the cache (once per version)
#   connect.sh start     start the campaign Postgres (a private cluster of its own, wal_level = logical, with the
#                        recipient table and its publication) and Connect with the connector; return when the
#                        connector streams (its task runs and holds the replication slot)
#   connect.sh start-db  only the campaign Postgres (rows inserted before `start` arrive as the snapshot, op "r")
#   connect.sh stop      stop Connect and the campaign Postgres started from this checkout (and nothing else)
#   connect.sh status    exit 0 and say so when both run and the connector streams
#   connect.sh psql ...  psql into the campaign database (make changes by hand; they reach the bridge)
#   connect.sh clean     stop both and delete the campaign cluster and Connect's offsets (they go together: the
#                        offsets name a position in that cluster's write-ahead log)
#
# Settings (environment): CDC_PG_PORT (5442 + STACK_PORT_OFFSET), CONNECT_REST_PORT (8085 + STACK_PORT_OFFSET),
# CDC_TOPIC (<TOPIC_PREFIX>recipient-changes), CDC_SCHEMAS_ENABLE (true: the JSON converter's schema wrapper),
# CDC_TOPIC_PARTITIONS (3, when Connect has to create the topic), CONNECT_HEAP_OPTS, CONNECT_START_TIMEOUT (120 s);
# KAFKA_BOOTSTRAP_SERVERS and AB_VAR_DIR as for the rest of the stack. The campaign database is
# postgresql://campaign:campaign@127.0.0.1:CDC_PG_PORT/campaign.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/lib.sh"
load_stack_env connect
KAFKA_VERSION="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")}"
DEBEZIUM_VERSION="$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$here/connect/pom.xml")"
CACHE_DIR="${AB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/audience-bridge}"
LIBS="$CACHE_DIR/connect-$KAFKA_VERSION/libs"
PLUGINS="$CACHE_DIR/debezium-postgres-$DEBEZIUM_VERSION/plugins"
VAR_DIR="${AB_VAR_DIR:-$root/var}"
CDC_DIR="$VAR_DIR/cdc"
PG_PORT="${CDC_PG_PORT:-$((5442 + STACK_PORT_OFFSET))}"
REST_PORT="${CONNECT_REST_PORT:-$((8085 + STACK_PORT_OFFSET))}"
TOPIC="${CDC_TOPIC:-${TOPIC_PREFIX:-}recipient-changes}"
SCHEMAS_ENABLE="${CDC_SCHEMAS_ENABLE:-true}"
PARTITIONS="${CDC_TOPIC_PARTITIONS:-3}"
CONNECT_HEAP_OPTS="${CONNECT_HEAP_OPTS:--Xms128m -Xmx512m}"
START_TIMEOUT="${CONNECT_START_TIMEOUT:-120}"
PG_USER=campaign PG_PASSWORD=campaign PG_DB=campaign
CONNECTOR=campaign-recipients PUBLICATION=ab_recipient_changes SLOT=ab_recipient_changes
PIDFILE="$VAR_DIR/run/connect.pid"
LOG="$VAR_DIR/log/connect.log"

log() { printf 'connect: %s\n' "$*" >&2; }
fail() { log "$*"; exit 1; }

case "$SCHEMAS_ENABLE" in true|false) ;; *) fail "CDC_SCHEMAS_ENABLE=$SCHEMAS_ENABLE: true or false" ;; esac
[[ "$PG_PORT" =~ ^[0-9]+$ ]] || fail "CDC_PG_PORT=$PG_PORT is not a port number"
[[ "$REST_PORT" =~ ^[0-9]+$ ]] || fail "CONNECT_REST_PORT=$REST_PORT is not a port number"
[[ "$PARTITIONS" =~ ^[1-9][0-9]*$ ]] || fail "CDC_TOPIC_PARTITIONS=$PARTITIONS is not a positive whole number"
[[ "$TOPIC" =~ ^[A-Za-z0-9._-]+$ ]] || fail "CDC_TOPIC=$TOPIC is not a Kafka topic name"

# The campaign cluster lives beside the main one, wherever stack.py puts that (var/, or the postgres user's home
# when root runs this and that user cannot enter the checkout): <there>-campaign.
PG_DIR="$(AB_VAR_DIR="$VAR_DIR" stack_py pg-dir)-campaign"
PGDATA_DIR="$PG_DIR/data"
SOCKET_DIR="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------- jars

fetch() {
  [ -f "$LIBS/.complete" ] && [ -f "$PLUGINS/.complete" ] && return 0
  stack_py check java maven || exit 1
  local pom="$here/connect/pom.xml"
  mvn_fetch "$pom" "$LIBS" "Kafka Connect $KAFKA_VERSION" -P worker -Dkafka.version="$KAFKA_VERSION"
  # The Connect API and Kafka's clients are the worker's (left out of the plugin folder: one copy, the worker's).
  mvn_fetch "$pom" "$PLUGINS/debezium-connector-postgres" "Debezium's Postgres connector $DEBEZIUM_VERSION" \
      -P debezium -DexcludeGroupIds=org.apache.kafka,org.slf4j
  touch "$PLUGINS/.complete"
}

# ---------------------------------------------------------------------------------------------- campaign Postgres

pg_pid() { pid_in "$PGDATA_DIR/postmaster.pid"; }

campaign_psql() {
  as_owner "$(bindir)/psql" -v ON_ERROR_STOP=1 -q -h "$SOCKET_DIR" -p "$PG_PORT" "$@"
}

make_pg_dirs() {
  mkdir -p "$VAR_DIR/log" "$VAR_DIR/run" "$CDC_DIR"
  if [ "$(id -u)" -eq 0 ] && [ "${PG_DIR#"$VAR_DIR"/}" = "$PG_DIR" ]; then
    # Outside var/: a folder of the postgres user's own, naming this checkout (for `clean`).
    install -d -m 755 "$(dirname "$(dirname "$PG_DIR")")"
    install -d -o postgres -g "$(id -g postgres)" -m 755 "$(dirname "$PG_DIR")"
    install -d -o postgres -g "$(id -g postgres)" -m 700 "$PG_DIR"
    (cd "$VAR_DIR" && pwd -P) > "$PG_DIR/checkout"
  fi
  mkdir -p "$PG_DIR" "$SOCKET_DIR"
  touch "$PG_LOG"
  ln -sfn "$PG_LOG" "$VAR_DIR/log/campaign-postgres.log"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$PG_DIR" "$SOCKET_DIR" "$PG_LOG"; fi
}

init_cluster() {
  local bin="$1"
  log "initdb the campaign cluster in $PGDATA_DIR"
  as_owner "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >>"$PG_LOG" 2>&1 || { tail -n 20 "$PG_LOG" >&2; fail "initdb failed (log above)"; }
  # Logical decoding needs wal_level = logical, a WAL sender and a replication slot for the connector.
  cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
# audience-bridge campaign cluster (change data capture)
wal_level = logical
max_wal_senders = 4
max_replication_slots = 4
max_connections = 50
shared_buffers = 64MB
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCKET_DIR'
include_if_exists = 'campaign_port.conf'
CONF
}

start_db() {
  if pg_pid >/dev/null; then
    local was; was="$(sed -n 4p "$PGDATA_DIR/postmaster.pid")"
    [ "$was" = "$PG_PORT" ] || fail "the campaign cluster already runs on port $was, not $PG_PORT (CDC_PG_PORT): stop it first (connect.sh stop)"
    return 0
  fi
  port_open "$PG_PORT" && fail "127.0.0.1:$PG_PORT is taken (by a program this script did not start): set CDC_PG_PORT to a free port"
  local bin; bin="$(bindir)" || fail "PostgreSQL's server binaries are missing: \`make infra\` installs them (Debian's postgresql)"
  make_pg_dirs
  [ -f "$PGDATA_DIR/PG_VERSION" ] || init_cluster "$bin"
  echo "port = $PG_PORT" > "$PGDATA_DIR/campaign_port.conf"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$PGDATA_DIR/campaign_port.conf"; fi
  log "starting the campaign Postgres on 127.0.0.1:$PG_PORT (wal_level = logical; log $PG_LOG)"
  as_owner "${WITHOUT_INHERITED_FDS[@]}" "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t 60 start >/dev/null \
    || { tail -n 20 "$PG_LOG" >&2; fail "the campaign Postgres did not start (log above)"; }
  campaign_psql -U postgres -d postgres <<SQL
SELECT format('CREATE ROLE %I LOGIN REPLICATION PASSWORD %L', '$PG_USER', '$PG_PASSWORD')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
SQL
  campaign_psql -U "$PG_USER" -d "$PG_DB" -v publication="$PUBLICATION" -f - < "$here/connect/campaign.sql"
  log "campaign database ready: postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
}

stop_db() {
  pg_pid >/dev/null || return 0
  as_owner "$(bindir)/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null
  log "campaign Postgres stopped"
}

slot_active() {
  [ "$(campaign_psql -U postgres -d "$PG_DB" -tA \
        -c "SELECT active FROM pg_replication_slots WHERE slot_name = '$SLOT'" 2>/dev/null)" = "t" ]
}

# ---------------------------------------------------------------------------------------------- Connect

connect_pid() { pid_in "$PIDFILE"; }

# fill TEMPLATE OUT: the @NAME@ values of this start.
fill() {
  sed -e "s#@BOOTSTRAP@#$KAFKA_BOOTSTRAP_SERVERS#g" -e "s#@SCHEMAS_ENABLE@#$SCHEMAS_ENABLE#g" \
      -e "s#@OFFSETS_FILE@#$CDC_DIR/connect.offsets#g" -e "s#@PLUGIN_PATH@#$PLUGINS#g" \
      -e "s#@REST_PORT@#$REST_PORT#g" -e "s#@CONNECTOR_NAME@#$CONNECTOR#g" -e "s#@PG_PORT@#$PG_PORT#g" \
      -e "s#@PG_USER@#$PG_USER#g" -e "s#@PG_PASSWORD@#$PG_PASSWORD#g" -e "s#@PG_DB@#$PG_DB#g" \
      -e "s#@PUBLICATION@#$PUBLICATION#g" -e "s#@SLOT@#$SLOT#g" -e "s#@TOPIC@#$TOPIC#g" \
      -e "s#@PARTITIONS@#$PARTITIONS#g" "$1" > "$2"
}

# The connector's state and its task's, e.g. "RUNNING RUNNING", or "FAILED <trace>" (empty while REST is down).
connector_state() {
  curl -s --max-time 3 "http://127.0.0.1:$REST_PORT/connectors/$CONNECTOR/status" 2>/dev/null \
    | "${AB_PYTHON3:-python3}" -c '
import json, sys
try:
    s = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
tasks = s.get("tasks") or [{}]
connector = s.get("connector") or {}
failed = [t for t in [connector] + tasks if t.get("state") == "FAILED"]
if failed:
    print("FAILED " + failed[0].get("trace", "")[:3000])
else:
    print(connector.get("state"), tasks[0].get("state"))
' 2>/dev/null || true
}

start_connect() {
  if pid="$(connect_pid)"; then log "Connect already running (pid $pid)"; wait_streaming; return 0; fi
  port_open "$REST_PORT" && fail "127.0.0.1:$REST_PORT is taken (by a program this script did not start): set CONNECT_REST_PORT to a free port"
  stack_py check java || exit 1
  stack_py answers kafka || fail "no broker answers at $KAFKA_BOOTSTRAP_SERVERS: start it first (make infra)"
  fetch
  fill "$here/connect/worker.properties.template" "$CDC_DIR/worker.properties"
  fill "$here/connect/recipient-connector.properties.template" "$CDC_DIR/recipient-connector.properties"
  log "starting Kafka Connect $KAFKA_VERSION with Debezium $DEBEZIUM_VERSION: campaign.public.recipient -> $TOPIC on $KAFKA_BOOTSTRAP_SERVERS (log $LOG)"
  rm -f "$PIDFILE"
  # As kafka.sh: setsid detaches it from the terminal; the shell records its pid, then becomes the JVM.
  # shellcheck disable=SC2086  # the heap options are several words
  PIDFILE="$PIDFILE" "${WITHOUT_INHERITED_FDS[@]}" setsid sh -c 'echo $$ > "$PIDFILE"; exec "$@"' sh \
      java $CONNECT_HEAP_OPTS -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$here/connect/log4j2.properties" -cp "$LIBS/*" \
      org.apache.kafka.connect.cli.ConnectStandalone "$CDC_DIR/worker.properties" \
      "$CDC_DIR/recipient-connector.properties" >>"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 50); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
  wait_streaming
}

# Ready means streaming: the connector and its task run, and the task holds the replication slot.
wait_streaming() {
  local deadline=$((SECONDS + START_TIMEOUT)) state=""
  while :; do
    state="$(connector_state)"
    case "$state" in
      FAILED*) log "the connector failed; its trace and the last lines of $LOG:"; echo "${state#FAILED }" >&2
               tail -n 20 "$LOG" >&2; exit 1 ;;
      "RUNNING RUNNING") slot_active && break ;;
    esac
    if ! connect_pid >/dev/null; then log "Connect exited during start; last lines of $LOG:"; tail -n 30 "$LOG" >&2; exit 1; fi
    if [ $SECONDS -ge $deadline ]; then log "the connector does not stream after ${START_TIMEOUT}s (state: ${state:-no answer})"; tail -n 30 "$LOG" >&2; exit 1; fi
    sleep 0.5
  done
  log "streaming: campaign.public.recipient -> $TOPIC (REST 127.0.0.1:$REST_PORT)"
}

stop_connect() {
  local pid
  pid="$(connect_pid)" || { rm -f "$PIDFILE"; return 0; }
  stop_pid "$pid" "$PIDFILE"
}

# ---------------------------------------------------------------------------------------------- commands

# Before anything starts: both ports free, or held by what this checkout started (one line when not).
check_ports() {
  pg_pid >/dev/null || ! port_open "$PG_PORT" \
    || fail "127.0.0.1:$PG_PORT is taken (by a program this script did not start): set CDC_PG_PORT to a free port"
  connect_pid >/dev/null || ! port_open "$REST_PORT" \
    || fail "127.0.0.1:$REST_PORT is taken (by a program this script did not start): set CONNECT_REST_PORT to a free port"
}

status() {
  local rc=0 pid
  if pid="$(pg_pid)"; then echo "campaign   ready    postgresql://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB (wal_level = logical, pid $pid)"
  else echo "campaign   stopped"; rc=1; fi
  if pid="$(connect_pid)"; then
    local state; state="$(connector_state)"
    if [ "$state" = "RUNNING RUNNING" ]; then echo "connect    ready    $CONNECTOR -> $TOPIC (REST 127.0.0.1:$REST_PORT, pid $pid)"
    else echo "connect    running  connector ${state%% *}${state:+ }(REST 127.0.0.1:$REST_PORT, pid $pid)"; rc=1; fi
  else echo "connect    stopped"; rc=1; fi
  return $rc
}

clean() {
  stop_connect; stop_db
  rm -rf "$CDC_DIR"; rm -f "$VAR_DIR/log/campaign-postgres.log"
  [ -d "$PG_DIR" ] || return 0
  if [ "${PG_DIR#"$VAR_DIR"/}" = "$PG_DIR" ] && [ "$(cat "$PG_DIR/checkout" 2>/dev/null)" != "$(cd "$VAR_DIR" && pwd -P)" ]; then
    log "$PG_DIR does not name this checkout in its checkout file: left alone"; return 0
  fi
  rm -rf "$PG_DIR"
  log "removed $PG_DIR and Connect's offsets"
}

case "${1:-}" in
  fetch) fetch ;;
  start) check_ports; start_db; start_connect ;;
  start-db) start_db ;;
  stop) stop_connect; stop_db ;;
  status) status ;;
  psql) shift; pg_pid >/dev/null || fail "the campaign Postgres is not running (connect.sh start)"
        campaign_psql -U "$PG_USER" -d "$PG_DB" "$@" ;;
  clean) clean ;;
  *) echo "usage: $0 fetch|start|start-db|stop|status|psql [ARGS]|clean" >&2; exit 2 ;;
esac
