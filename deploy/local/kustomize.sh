#!/usr/bin/env bash
# kustomize for rendering deploy/k8s (the tests validate its output), built from its Go module once per
# version with the machine's Go toolchain (through the Go module proxy) into the cache.
#   kustomize.sh install      build it into the cache unless it is there; print its path
#   kustomize.sh which        print its path if it is in the cache (exit 1 otherwise; never downloads)
#   kustomize.sh build DIR    install if needed, then `kustomize build DIR`
set -euo pipefail

KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"  # v5.8.3 needs Go >= 1.27
CACHE_DIR="${AB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/audience-bridge}"
DIR="$CACHE_DIR/kustomize-$KUSTOMIZE_VERSION"
BIN="$DIR/kustomize"

log() { printf 'kustomize: %s\n' "$*" >&2; }

install() {
  if [ -x "$BIN" ]; then echo "$BIN"; return 0; fi
  command -v go >/dev/null || { log "Go is required to build kustomize (go install from the Go module proxy)"; exit 1; }
  log "building sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION (once; about a minute)"
  mkdir -p "$DIR"
  BUILD_TMP="$(mktemp -d "$DIR/.build-XXXXXX")"
  trap 'rm -rf "$BUILD_TMP"' EXIT
  GOBIN="$BUILD_TMP" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
  mv "$BUILD_TMP/kustomize" "$BIN"
  echo "$BIN"
}

case "${1:-}" in
  install) install ;;
  which) [ -x "$BIN" ] && echo "$BIN" ;;
  build) shift; bin="$(install)"; exec "$bin" build "$@" ;;
  *) echo "usage: $0 install|which|build DIR" >&2; exit 2 ;;
esac
