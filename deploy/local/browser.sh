#!/usr/bin/env bash
# Headless Chromium for the status page's browser tests (Debian's `chromium` package). Idempotent.
#   browser.sh install   install chromium when it is missing (apt-get; sudo when not root); print its path
#   browser.sh path      print the chromium binary's path, exit 1 when there is none
set -euo pipefail

log() { printf 'browser: %s\n' "$*" >&2; }

find_chromium() {
  local name
  for name in chromium chromium-browser; do
    command -v "$name" 2>/dev/null && return 0
  done
  return 1
}

install() {
  if find_chromium; then return 0; fi
  command -v apt-get >/dev/null || { log "chromium is missing and apt-get is not available: install chromium by hand"; exit 1; }
  log "chromium not found: installing Debian's chromium"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  # --no-install-recommends keeps it small: the tests need the headless browser and its fonts only.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
  find_chromium || { log "chromium installed but not on PATH"; exit 1; }
}

case "${1:-install}" in
  install) install ;;
  path) find_chromium ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
