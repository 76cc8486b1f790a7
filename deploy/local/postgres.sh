#!/usr/bin/env bash
# A real PostgreSQL server for the local stack and the tests, without Docker.
#   postgres.sh start   use the server at DATABASE_URL when one answers (a server no checkout started); otherwise
#                       install Debian's postgresql if missing, initdb a private cluster, start it on DATABASE_URL's
#                       port; create role and database. First checks (one line each when they fail): the port,
#                       the binaries (or apt-get and root/sudo to install them), disk.
#   postgres.sh stop    stop the private cluster (never a server this script did not start)
#   postgres.sh status  exit 0 and say so when the server answers
#   postgres.sh clean   stop the private cluster and delete it when it lives outside var/ (`make clean`)
#
# The private cluster lives in var/postgres. As root the server runs as the `postgres` user; when that user cannot
# enter the checkout (a checkout under /root, mode 700), the cluster lives in a folder of its own instead,
# <postgres's home>/audience-bridge/<12 hex of var/'s path> (stack.py choose_pg_dir), its log linked from
# var/log/postgres.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/lib.sh"
load_stack_env postgres
VAR_DIR="${AB_VAR_DIR:-$root/var}"
LOG_LINK="$VAR_DIR/log/postgres.log"

log() { printf 'postgres: %s\n' "$*" >&2; }

# postgresql://user:password@host:port/dbname -> parts (the local default has no exotic characters)
url_re='^postgres(ql)?://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?/([^?]+)'
[[ "$DATABASE_URL" =~ $url_re ]] || { log "DATABASE_URL is not of the form postgresql://user[:password]@host[:port]/dbname"; exit 2; }
DB_USER="${BASH_REMATCH[2]}"; DB_PASS="${BASH_REMATCH[4]}"; DB_HOST="${BASH_REMATCH[5]}"
DB_PORT="${BASH_REMATCH[7]:-5432}"; DB_NAME="${BASH_REMATCH[8]}"

# Where the cluster lives (PG_DIR: data/, run/ for the socket, and the log); decided again after an install,
# which creates the postgres user.
place() {
  PG_DIR="$(stack_py pg-dir "$@")"
  PGDATA_DIR="$PG_DIR/data"
  SOCKET_DIR="$PG_DIR/run"
  if [ "$PG_DIR" = "$VAR_DIR/postgres" ]; then LOG="$LOG_LINK"; OUTSIDE=""; else LOG="$PG_DIR/postgres.log"; OUTSIDE=1; fi
}
place

ensure_installed() {
  bindir >/dev/null && return 0
  stack_py check postgres-binaries || exit 1
  log "PostgreSQL server binaries not found: installing Debian's postgresql"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql; } >/dev/null \
    || { log "apt-get could not install postgresql (no network to the Debian mirrors?): install it by hand (apt-get install postgresql), or point DATABASE_URL at a running server"; exit 1; }
  # Debian's package starts its own cluster on 5432; the private cluster below is the one we use.
  if command -v pg_ctlcluster >/dev/null; then $sudo pg_ctlcluster --force "$(ls /etc/postgresql | head -n1)" main stop 2>/dev/null || true; fi
  bindir >/dev/null || { log "postgresql installed but initdb/pg_ctl still not found"; exit 1; }
}

private_pid() { pid_in "$PGDATA_DIR/postmaster.pid"; }

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

# The cluster's folders, owned by the postgres user when root runs this; outside var/ a `checkout` file names
# the checkout (for `postgres.sh clean` and for the port checks' messages) and var/log/postgres.log links the log.
make_dirs() {
  mkdir -p "$VAR_DIR/log"
  if [ -n "$OUTSIDE" ]; then
    install -d -m 755 "$(dirname "$(dirname "$PG_DIR")")"
    install -d -o postgres -g "$(id -g postgres)" -m 700 "$(dirname "$PG_DIR")" "$PG_DIR"
    (cd "$VAR_DIR" && pwd -P) > "$PG_DIR/checkout"
    ln -sfn "$LOG" "$LOG_LINK"
  fi
  mkdir -p "$PG_DIR" "$SOCKET_DIR"
  [ -L "$LOG" ] && rm -f "$LOG"  # a link left by an earlier run from outside var/
  touch "$LOG"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$PG_DIR" "$SOCKET_DIR" "$LOG"; fi
}

# Written at every start, so that the cluster follows DATABASE_URL's port and this checkout's socket folder.
write_local_conf() {
  cat >"$PGDATA_DIR/audience_bridge.conf" <<CONF
# written by deploy/local/postgres.sh at every start
listen_addresses = '127.0.0.1'
port = $DB_PORT
unix_socket_directories = '$SOCKET_DIR'
CONF
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$PGDATA_DIR/audience_bridge.conf"; fi
  grep -q "^include_if_exists = 'audience_bridge.conf'" "$PGDATA_DIR/postgresql.conf" \
    || echo "include_if_exists = 'audience_bridge.conf'" >>"$PGDATA_DIR/postgresql.conf"
}

start() {
  local pid
  if pid="$(private_pid)"; then
    local was; was="$(sed -n 4p "$PGDATA_DIR/postmaster.pid")"
    if [ "$was" != "$DB_PORT" ]; then
      log "this checkout's cluster already runs on port $was, not $DB_PORT (DATABASE_URL): stop it first (make down), then start again"
      exit 1
    fi
    log "private cluster already running"; create_role_and_db; return 0
  fi
  case "$DB_HOST" in
    127.0.0.1|localhost|::1) ;;
    *) stack_py answers postgres \
         || { log "no server answers at $DB_HOST:$DB_PORT and it is not local: start it, or point DATABASE_URL at 127.0.0.1"; exit 1; }
       log "a server answers at $DB_HOST:$DB_PORT: using it (DATABASE_URL)"; return 0 ;;
  esac
  local rc=0; stack_py port postgres >&2 || rc=$?
  case $rc in
    0) ;;
    3) log "a server answers at $DB_HOST:$DB_PORT (no checkout started it): using it (DATABASE_URL)"; return 0 ;;
    4) return 0 ;;  # another checkout's cluster (stack_py said so): shared by tests and benchmarks only
    *) exit 1 ;;
  esac
  ensure_installed
  place --say
  stack_py check disk-postgres || exit 1
  local bin; bin="$(bindir)"
  make_dirs
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    log "initdb a private cluster in $PGDATA_DIR"
    as_owner "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; log "initdb failed (log above, in $LOG)"; exit 1; }
    cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
# audience-bridge local cluster
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
  write_local_conf
  log "starting private cluster on 127.0.0.1:$DB_PORT (log $LOG)"
  # The server keeps none of its caller's files (lib.sh: WITHOUT_INHERITED_FDS).
  as_owner "${WITHOUT_INHERITED_FDS[@]}" "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$LOG" -w -t 60 start >/dev/null \
    || { tail -n 20 "$LOG" >&2; log "the server did not start (log above, in $LOG)"; exit 1; }
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
  if pid="$(private_pid)"; then
    local was; was="$(sed -n 4p "$PGDATA_DIR/postmaster.pid")"
    if [ "$was" != "$DB_PORT" ]; then echo "postgres   running  127.0.0.1:$was, not $DB_PORT as set (private cluster in $PG_DIR, pid $pid)"; return 1; fi
    echo "postgres   ready    $DB_HOST:$DB_PORT/$DB_NAME (private cluster in $PG_DIR, pid $pid)"; return 0
  fi
  if stack_py answers postgres; then
    local rc=0 why; why="$(stack_py port postgres 2>&1)" || rc=$?
    if [ $rc -eq 1 ]; then echo "postgres   taken    ${why#postgres: }"; return 1; fi
    echo "postgres   ready    $DB_HOST:$DB_PORT (external server)"; return 0
  fi
  echo "postgres   stopped"; return 1
}

# Only the cluster of this checkout, outside var/ (var/postgres goes with var/): its `checkout` file must name it.
clean() {
  stop
  [ -n "$OUTSIDE" ] || return 0
  [ -d "$PG_DIR" ] || return 0
  if [ "$(cat "$PG_DIR/checkout" 2>/dev/null)" != "$(cd "$VAR_DIR" 2>/dev/null && pwd -P)" ]; then
    log "$PG_DIR does not name this checkout in its checkout file: left alone"; return 0
  fi
  rm -rf "$PG_DIR"; rm -f "$LOG_LINK"
  log "removed $PG_DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  clean) clean ;;
  *) echo "usage: $0 start|stop|status|clean" >&2; exit 2 ;;
esac
