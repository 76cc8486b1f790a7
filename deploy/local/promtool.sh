#!/usr/bin/env bash
# promtool for the alerting rules' tests (deploy/prometheus/alerts.yml, tests/prometheus/*.yml): Debian's
# `prometheus` package ships it. Idempotent.
#   promtool.sh install   install promtool when it is missing (apt-get; sudo when not root); print its path
#   promtool.sh path      print promtool's path, exit 1 when there is none
set -euo pipefail

log() { printf 'promtool: %s\n' "$*" >&2; }

find_promtool() {
  command -v promtool 2>/dev/null
}

install() {
  if find_promtool; then return 0; fi
  command -v apt-get >/dev/null || { log "promtool is missing and apt-get is not available: install Prometheus's promtool by hand"; exit 1; }
  log "promtool not found: installing Debian's prometheus package"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  # The package would also start a Prometheus server where systemd runs: stop it (policy-rc.d is not ours
  # to change), only promtool is wanted.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  find_promtool || { log "prometheus installed but promtool is not on PATH"; exit 1; }
}

case "${1:-install}" in
  install) install ;;
  path) find_promtool ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
