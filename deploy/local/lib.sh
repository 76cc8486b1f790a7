# Sourced by kafka.sh, postgres.sh and services.sh (after they set $here): the stack's settings.
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
