#!/usr/bin/env bash
# A release binary with its debug symbols beside it, the way distributions
# ship them: target/dist/bankbridge (stripped, with a .gnu_debuglink naming
# the symbols file) and target/dist/bankbridge.debug (line tables: a
# debugger or `addr2line -e bankbridge.debug` turns addresses of a crash
# report into files and lines). Needs objcopy (binutils).
#
#   scripts/release.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "release.sh: $*" >&2; }

if ! command -v objcopy >/dev/null 2>&1; then
    log "objcopy not found: install binutils (Debian/Ubuntu: sudo apt-get install binutils)"
    exit 1
fi

cargo build --profile dist -p bankbridge
bin=target/dist/bankbridge
objcopy --only-keep-debug "$bin" "$bin.debug"
chmod 0644 "$bin.debug"
objcopy --strip-debug --add-gnu-debuglink="$bin.debug" "$bin"
log "$(du -h "$bin" | cut -f1) $bin"
log "$(du -h "$bin.debug" | cut -f1) $bin.debug"
