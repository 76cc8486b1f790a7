#!/usr/bin/env bash
# A real PostgreSQL server for the local stack and the tests, without Docker.
#   postgres.sh start   use the server at DATABASE_URL when one answers; otherwise install Debian's postgresql
#                       if missing, initdb a private cluster under var/postgres, start it; create role and database
#   postgres.sh stop    stop the private cluster (never a server this script did not start)
#   postgres.sh status  exit 0 and say so when the server answers
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
VAR_DIR="${AB_VAR_DIR:-$root/var}"
DATABASE_URL="${DATABASE_URL:-postgresql://audience_bridge:audience_bridge@127.0.0.1:5432/audience_bridge}"
PGDATA_DIR="$VAR_DIR/postgres/data"
SOCKET_DIR="$VAR_DIR/postgres/run"
LOG="$VAR_DIR/log/postgres.log"

log() { printf 'postgres: %s\n' "$*" >&2; }

# postgresql://user:password@host:port/dbname -> parts (the local default has no exotic characters)
url_re='^postgres(ql)?://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?/([^?]+)'
[[ "$DATABASE_URL" =~ $url_re ]] || { log "DATABASE_URL is not of the form postgresql://user[:password]@host[:port]/dbname"; exit 2; }
DB_USER="${BASH_REMATCH[2]}"; DB_PASS="${BASH_REMATCH[4]}"; DB_HOST="${BASH_REMATCH[5]}"
DB_PORT="${BASH_REMATCH[7]:-5432}"; DB_NAME="${BASH_REMATCH[8]}"

answers() { pg_isready -q -h "$DB_HOST" -p "$DB_PORT" -t 2 >/dev/null 2>&1; }

bindir() {
  local d
  for d in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_installed() {
  bindir >/dev/null && return 0
  log "PostgreSQL server binaries not found: installing Debian's postgresql"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql >/dev/null
  # Debian's package starts its own cluster on 5432; the private cluster below is the one we use.
  if command -v pg_ctlcluster >/dev/null; then $sudo pg_ctlcluster --force "$(ls /etc/postgresql | head -n1)" main stop 2>/dev/null || true; fi
  bindir >/dev/null || { log "postgresql installed but initdb/pg_ctl still not found"; exit 1; }
}

# initdb and postgres refuse to run as root: run them as the 'postgres' system user then.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

private_pid() {
  [ -f "$PGDATA_DIR/postmaster.pid" ] || return 1
  local pid; pid="$(head -n 1 "$PGDATA_DIR/postmaster.pid")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

psql_admin() {
  as_owner psql -v ON_ERROR_STOP=1 -q -h "$SOCKET_DIR" -p "$DB_PORT" -U postgres -d postgres "$@"
}

create_role_and_db() {
  local pass_sql="NULL"; [ -n "$DB_PASS" ] && pass_sql="'${DB_PASS//\'/\'\'}'"
  psql_admin <<SQL
SELECT format('CREATE ROLE %I', '$DB_USER') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') \gexec
ALTER ROLE "$DB_USER" WITH LOGIN CREATEDB PASSWORD $pass_sql;
SELECT format('CREATE DATABASE %I OWNER %I', '$DB_NAME', '$DB_USER')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB_NAME') \gexec
SQL
}

start() {
  if private_pid >/dev/null; then log "private cluster already running"; create_role_and_db; return 0; fi
  if answers; then log "a server answers at $DB_HOST:$DB_PORT: using it (DATABASE_URL)"; return 0; fi
  case "$DB_HOST" in 127.0.0.1|localhost|::1) ;; *) log "no server answers at $DB_HOST:$DB_PORT and it is not local"; exit 1 ;; esac
  ensure_installed
  local bin; bin="$(bindir)"
  mkdir -p "$VAR_DIR/postgres" "$SOCKET_DIR" "$VAR_DIR/log"
  touch "$LOG"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$VAR_DIR/postgres" "$SOCKET_DIR" "$LOG"; fi
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    log "initdb a private cluster in $PGDATA_DIR"
    as_owner "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; exit 1; }
    cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
# audience-bridge local cluster
listen_addresses = '127.0.0.1'
port = $DB_PORT
unix_socket_directories = '$SOCKET_DIR'
max_connections = 200
shared_buffers = 512MB
work_mem = 32MB
maintenance_work_mem = 256MB
wal_level = minimal
max_wal_senders = 0
synchronous_commit = on
max_wal_size = 2GB
checkpoint_timeout = 15min
CONF
  fi
  log "starting private cluster on 127.0.0.1:$DB_PORT (log $LOG)"
  as_owner "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$LOG" -w -t 60 start >/dev/null
  create_role_and_db
  log "ready: database $DB_NAME"
}

stop() {
  if ! private_pid >/dev/null; then log "private cluster not running"; return 0; fi
  as_owner "$(bindir)/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null
  log "stopped"
}

status() {
  local pid
  if pid="$(private_pid)"; then echo "postgres   ready    $DB_HOST:$DB_PORT/$DB_NAME (private cluster, pid $pid)"; return 0; fi
  if answers; then echo "postgres   ready    $DB_HOST:$DB_PORT (external server)"; return 0; fi
  echo "postgres   stopped"; return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
