#!/usr/bin/env bash
# The bridge's own processes (ecsim, ingest, reconcile, publish) for the local stack.
#   services.sh start NAME...   start each in the background (logs in var/log/NAME.log), wait until /readyz answers 200;
#                               first, each port must be free (else one line: what holds it, the setting that moves it)
#   services.sh stop NAME...    SIGTERM, wait for a clean exit (SIGKILL after 20 s)
#   services.sh status NAME...  one line each; exit 1 if any is not ready
# Ports: INGEST_HTTP_PORT, RECONCILE_HTTP_PORT, PUBLISH_HTTP_PORT, ECSIM_HTTP_PORT (or STACK_PORT_OFFSET: lib.sh);
# ingest and publish reach ecsim on its port (PLATFORM_IMS_URL and PLATFORM_API_URL, unless set).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/lib.sh"
load_stack_env services
VAR_DIR="${AB_VAR_DIR:-$root/var}"
# The venv's python (not $PYTHON: `make PYTHON=python3.X` names the interpreter that builds the venv).
PY="${AB_SERVICES_PYTHON:-$root/.venv/bin/python}"
READY_TIMEOUT="${SERVICE_READY_TIMEOUT:-90}"

port_of() {
  case "$1" in
    ingest) echo "${INGEST_HTTP_PORT:-8081}" ;;
    reconcile) echo "${RECONCILE_HTTP_PORT:-8082}" ;;
    publish) echo "${PUBLISH_HTTP_PORT:-8083}" ;;
    ecsim) echo "${ECSIM_HTTP_PORT:-8090}" ;;
    *) echo "unknown service: $1" >&2; exit 2 ;;
  esac
}

pid_of() {
  local f="$VAR_DIR/run/$1.pid"
  [ -f "$f" ] || return 1
  local pid; pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$1$2" 2>/dev/null || true; }

start_one() {
  local name="$1" port; port="$(port_of "$name")"
  mkdir -p "$VAR_DIR/run" "$VAR_DIR/log"
  if pid_of "$name" >/dev/null; then echo "$name: already running" >&2; return 0; fi
  rm -f "$VAR_DIR/run/$name.pid"
  # The local ecsim serves its /sim admin endpoints (the demo drives deliveries through them). ecsim
  # processes inbound files within seconds, so the local stack waits 10 minutes for a receipt, not the
  # real platform's 48 hours.
  # The shell records its own pid and then becomes the service (exec), so the pid file names the service
  # itself even when setsid has to fork. Only the log file is inherited: a service holding this script's
  # stdout, or any other file of its caller's, open would keep whoever reads it (a pipe, CI) waiting until the
  # service exits (lib.sh: WITHOUT_INHERITED_FDS).
  HTTP_PORT="$port" ECSIM_ADMIN_ENABLED="${ECSIM_ADMIN_ENABLED:-true}" PIDFILE="$VAR_DIR/run/$name.pid" \
    PLATFORM_IMS_URL="${PLATFORM_IMS_URL:-http://127.0.0.1:$ECSIM_HTTP_PORT/ims/token/v3}" \
    PLATFORM_API_URL="${PLATFORM_API_URL:-http://127.0.0.1:$ECSIM_HTTP_PORT/v1}" \
    EXPORT_RECEIPT_TIMEOUT_S="${EXPORT_RECEIPT_TIMEOUT_S:-600}" \
    "${WITHOUT_INHERITED_FDS[@]}" setsid sh -c 'cd "$1" && echo $$ > "$PIDFILE" && exec "$2" -m "services.$3"' sh "$root" "$PY" "$name" \
    >>"$VAR_DIR/log/$name.log" 2>&1 < /dev/null &
  for _ in $(seq 1 50); do [ -s "$VAR_DIR/run/$name.pid" ] && break; sleep 0.1; done
}

wait_ready() {
  local name="$1" port; port="$(port_of "$name")"
  local deadline=$((SECONDS + READY_TIMEOUT))
  until [ "$(http_code "$port" /readyz)" = "200" ]; do
    if ! pid_of "$name" >/dev/null; then echo "$name: exited during start; last lines of var/log/$name.log:" >&2; tail -n 20 "$VAR_DIR/log/$name.log" >&2; exit 1; fi
    if [ $SECONDS -ge $deadline ]; then echo "$name: not ready after ${READY_TIMEOUT}s" >&2; tail -n 20 "$VAR_DIR/log/$name.log" >&2; exit 1; fi
    sleep 0.3
  done
  echo "$name: ready on 127.0.0.1:$port" >&2
}

stop_one() {
  local name="$1" pid
  if ! pid="$(pid_of "$name")"; then rm -f "$VAR_DIR/run/$name.pid"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || { rm -f "$VAR_DIR/run/$name.pid"; echo "$name: stopped" >&2; return 0; }; sleep 0.25; done
  echo "$name: did not stop within 20s: killing" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$VAR_DIR/run/$name.pid"
}

status_one() {
  local name="$1" port pid code; port="$(port_of "$name")"
  if ! pid="$(pid_of "$name")"; then printf '%-10s stopped\n' "$name"; return 1; fi
  code="$(http_code "$port" /readyz)"
  if [ "$code" = "200" ]; then printf '%-10s ready    http://127.0.0.1:%s (pid %s)\n' "$name" "$port" "$pid"; return 0; fi
  printf '%-10s running  http://127.0.0.1:%s not ready (readyz %s, pid %s)\n' "$name" "$port" "$code" "$pid"; return 1
}

cmd="${1:-}"; shift || true
[ $# -gt 0 ] || set -- ecsim ingest reconcile publish
case "$cmd" in
  start)
    # Each port free (or this checkout's service already), and the broker and the server no other checkout's.
    for infra in kafka postgres; do
      rc=0; stack_py port "$infra" --own || rc=$?
      case $rc in 0|3) ;; *) exit 1 ;; esac
    done
    for s in "$@"; do pid_of "$s" >/dev/null || stack_py port "$s" || exit 1; done
    for s in "$@"; do start_one "$s"; done; for s in "$@"; do wait_ready "$s"; done ;;
  stop) for s in "$@"; do stop_one "$s"; done ;;
  status) rc=0; for s in "$@"; do status_one "$s" || rc=1; done; exit $rc ;;
  *) echo "usage: $0 start|stop|status [NAME...]" >&2; exit 2 ;;
esac
