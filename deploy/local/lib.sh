# Sourced by kafka.sh, postgres.sh, connect.sh and services.sh (after they set $here): the stack's settings,
# and what those scripts do alike (the helpers that log use the script's own log function).
# stack.py resolves them (STACK_PORT_OFFSET, KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, *_HTTP_PORT, ...: see its
# docstring and README "Two stacks side by side"), from the environment or var/stack.env.

stack_py() { "${AB_PYTHON3:-python3}" "$here/stack.py" "$@"; }

# load_stack_env WHO: export the stack's settings, or stop with one line saying why not.
load_stack_env() {
  command -v "${AB_PYTHON3:-python3}" >/dev/null \
    || { printf '%s: python3 (3.11+) is needed: install it (Debian: apt-get install python3 python3-venv)\n' "$1" >&2; exit 1; }
  local exports
  exports="$(stack_py env)" || exit 2
  eval "$exports"
}

# PostgreSQL's server binaries (postgres.sh's main cluster and connect.sh's campaign cluster): their folder.
bindir() {
  local d
  for d in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

# initdb and postgres refuse to run as root: run them as the 'postgres' system user then (from /, which that
# user can enter whatever the checkout's permissions).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# "${WITHOUT_INHERITED_FDS[@]}" CMD...: CMD with only this shell's stdin, stdout and stderr, every other file
# it holds closed (then CMD is exec'd, so a simple command in the background leaves no shell behind holding them).
# A daemon inheriting more holds it for its whole life: a lock its caller took (`flock LOCK make bench` starting
# the infrastructure: the lock never released) or a pipe a CI runner reads (never at its end). Inline Python,
# not a file: as_owner runs it as another user, from /.
WITHOUT_INHERITED_FDS=(python3 -c 'import os, sys; os.closerange(3, os.sysconf("SC_OPEN_MAX")); os.execvp(sys.argv[1], sys.argv[1:])')

# pid_in FILE: the pid on the file's first line, when that process lives (exit 1 otherwise).
pid_in() {
  [ -f "$1" ] || return 1
  local pid; pid="$(head -n 1 "$1")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# stop_pid PID PIDFILE: SIGTERM, up to 30 s to end, then SIGKILL; the pid file goes.
stop_pid() {
  log "stopping (pid $1)"
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$1" 2>/dev/null || { rm -f "$2"; log "stopped"; return 0; }; sleep 0.5; done
  log "did not stop within 30s: killing"
  kill -KILL "$1" 2>/dev/null || true
  rm -f "$2"
}

# mvn_fetch POM DIR WHAT [MVN OPTIONS...]: POM's runtime dependencies from Maven Central into DIR, all or
# nothing (DIR/.complete marks a finished copy; a failed one leaves nothing and says why in one line).
mvn_fetch() {
  local pom="$1" dir="$2" what="$3"; shift 3
  [ -f "$dir/.complete" ] && return 0
  log "fetching $what and its runtime dependencies from Maven Central into $dir"
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  mvn -q -B -Dstyle.color=never -f "$pom" "$@" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir.tmp" \
    || { rm -rf "$dir.tmp"; stack_py diagnose maven; exit 1; }
  touch "$dir.tmp/.complete"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
}
