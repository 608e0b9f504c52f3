#!/usr/bin/env bash
# The bankbridge demo on a fresh machine: installs what the build needs
# (pkg-config and libpcsclite-dev: the card-reader support links the PC/SC
# library), then builds and runs `bankbridge demo` — a simulated bank synced
# into embedded SQLite, the API server, a virtual bank card, tokens and ready
# `curl` lines. Extra arguments go to `bankbridge demo` (see --help).
#
#   scripts/demo.sh
#   scripts/demo.sh --listen 127.0.0.1:9090 --transactions 20000
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "demo.sh: $*" >&2; }

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libpcsclite 2>/dev/null || need+=(libpcsclite-dev)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
            apt-get update -qq
            apt-get install -y -qq "${need[@]}"
        }
    else
        log "missing ${need[*]}: install them (Debian/Ubuntu: sudo apt-get install ${need[*]}) and run again"
        exit 1
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: install Rust (https://rustup.rs) and run again"
    exit 1
fi

exec cargo run --release -p bankbridge -- demo "$@"
