#!/usr/bin/env bash
# toxiproxy (Shopify's TCP fault proxy) for the fault scenario (tests/chaos): the services reach Postgres and
# Kafka through it, and the scenario cuts and delays those connections through its HTTP API. Built from its Go
# module once per version with the machine's Go toolchain (through the Go module proxy) into the cache, like
# deploy/local/kustomize.sh builds kustomize.
#   toxiproxy.sh install      build toxiproxy-server into the cache unless it is there; print its path
#   toxiproxy.sh which        print its path if it is in the cache (exit 1 otherwise; never downloads)
set -euo pipefail

TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-v2.5.0}"
CACHE_DIR="${AB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/audience-bridge}"
DIR="$CACHE_DIR/toxiproxy-$TOXIPROXY_VERSION"
BIN="$DIR/toxiproxy-server"

log() { printf 'toxiproxy: %s\n' "$*" >&2; }

install() {
  if [ -x "$BIN" ]; then echo "$BIN"; return 0; fi
  command -v go >/dev/null || { log "Go is required to build toxiproxy (go install from the Go module proxy)"; exit 1; }
  log "building github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION (once; about a minute)"
  mkdir -p "$DIR"
  BUILD_TMP="$(mktemp -d "$DIR/.build-XXXXXX")"
  trap 'rm -rf "$BUILD_TMP"' EXIT
  GOBIN="$BUILD_TMP" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >&2
  mv "$BUILD_TMP/server" "$BIN"
  echo "$BIN"
}

case "${1:-}" in
  install) install ;;
  which) [ -x "$BIN" ] && echo "$BIN" ;;
  *) echo "usage: $0 install|which" >&2; exit 2 ;;
esac
