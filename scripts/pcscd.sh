#!/usr/bin/env bash
# pcscd with vsmartcard's vpcd driver, for the card tests: virtual cards
# connect to 127.0.0.1:35963 ("Virtual PCD 00 00") and :35964 ("00 01").
#
#   scripts/pcscd.sh install   # Debian packages the build and tests need
#   scripts/pcscd.sh start     # install, then start pcscd unless one runs
#   scripts/pcscd.sh stop      # stop the pcscd this script started
#   scripts/pcscd.sh status    # exit 0 when pcscd and vpcd are ready
#
# `start` and `stop` are idempotent. A pcscd already running (the system's)
# is used as it is and never stopped. `install` needs root and apt-get;
# without them it only says what is missing. The pcsc crate links
# libpcsclite at build time, so run `install` before building.
#
# Environment: BANKBRIDGE_PCSCD_STATE (state file, default
# /tmp/bankbridge-pcscd.env). Messages go to stderr.
set -euo pipefail

STATE="${BANKBRIDGE_PCSCD_STATE:-/tmp/bankbridge-pcscd.env}"
VPCD_PORT=35963
PACKAGES=(pcscd vsmartcard-vpcd libpcsclite-dev pkg-config)

log() { echo "pcscd.sh: $*" >&2; }
die() { log "$*"; exit 1; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

cmd_install() {
    local missing=() pkg
    if command -v dpkg-query >/dev/null 2>&1; then
        for pkg in "${PACKAGES[@]}"; do
            installed "$pkg" || missing+=("$pkg")
        done
    else
        pkg-config --exists libpcsclite 2>/dev/null || missing+=(libpcsclite-dev pkg-config)
        command -v pcscd >/dev/null 2>&1 || missing+=(pcscd vsmartcard-vpcd)
    fi
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "missing ${missing[*]}: install them (Debian: apt-get install ${PACKAGES[*]})"
        return 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when the install cannot go without.
    if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq >&2
        apt-get install -y -qq "${missing[@]}" >&2
    fi
}

pcscd_bin() {
    command -v pcscd 2>/dev/null || { [ -x /usr/sbin/pcscd ] && echo /usr/sbin/pcscd; }
}

# A pcscd process, ours or not: the pid, or nothing.
running_pcscd() {
    local pid
    for file in /run/pcscd/pcscd.pid /var/run/pcscd/pcscd.pid; do
        if [ -r "$file" ]; then
            pid="$(tr -dc 0-9 <"$file")"
            if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pcscd ]; then
                echo "$pid"
                return 0
            fi
        fi
    done
    pgrep -x pcscd 2>/dev/null | head -n1 || true
}

# Whether something listens on 127.0.0.1/0.0.0.0:port. Read from /proc
# rather than by connecting: vpcd takes any connection for a card.
listening() {
    local hex
    hex="$(printf '%04X' "$1")"
    awk -v port="$hex" 'NR > 1 { split($2, a, ":"); if (a[2] == port && $4 == "0A") found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

cmd_status() {
    [ -n "$(running_pcscd)" ] && listening "$VPCD_PORT"
}

cmd_start() {
    local pid bin logfile
    pid="$(running_pcscd)"
    if [ -n "$pid" ]; then
        # It may be starting still (a package install can launch it).
        local waited=0
        while ! listening "$VPCD_PORT" && [ "$waited" -lt 50 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if listening "$VPCD_PORT"; then
            log "using the running pcscd (pid $pid)"
            return 0
        fi
        die "pcscd (pid $pid) runs without the vpcd driver (nothing listens on port $VPCD_PORT): install vsmartcard-vpcd, then restart pcscd (/etc/init.d/pcscd restart, or stop it and run $0 start)"
    fi
    cmd_install || die "cannot install what pcscd needs"
    [ -f /etc/reader.conf.d/vpcd ] || die "/etc/reader.conf.d/vpcd is missing: reinstall vsmartcard-vpcd"
    bin="$(pcscd_bin)" || die "pcscd not found after installing it"
    [ "$(id -u)" -eq 0 ] || die "pcscd must run as root (it owns /run/pcscd); run this as root or start the system's pcscd"
    logfile="$(mktemp /tmp/bankbridge-pcscd.XXXXXX.log)"
    # setsid: its own session, so a test run's Ctrl-C does not reach it
    # before the EXIT trap stops it cleanly.
    setsid "$bin" --foreground >"$logfile" 2>&1 </dev/null &
    pid=$!
    printf 'PCSCD_PID=%q\nPCSCD_LOG=%q\n' "$pid" "$logfile" >"$STATE"
    local tries=0
    until listening "$VPCD_PORT"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$logfile" >&2 || true
            rm -f "$STATE"
            die "pcscd exited at start (log above)"
        fi
        tries=$((tries + 1))
        if [ "$tries" -ge 100 ]; then
            cat "$logfile" >&2 || true
            cmd_stop
            die "pcscd did not open the vpcd port $VPCD_PORT within 10 s (log above)"
        fi
        sleep 0.1
    done
    # setsid forks when it cannot make a session in place: record the daemon.
    pid="$(running_pcscd)"
    printf 'PCSCD_PID=%q\nPCSCD_LOG=%q\n' "$pid" "$logfile" >"$STATE"
    log "started pcscd (pid $pid, log $logfile); stop it with: $0 stop"
}

cmd_stop() {
    if [ ! -f "$STATE" ]; then
        log "nothing to stop (no state file $STATE: pcscd was not started by this script)"
        return 0
    fi
    # shellcheck disable=SC1090
    . "$STATE"
    local pid="${PCSCD_PID:-}"
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pcscd ]; then
        kill -TERM "$pid" 2>/dev/null || true
        local tries=0
        while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 50 ]; do
            sleep 0.1
            tries=$((tries + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pcscd (pid $pid) ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped pcscd (pid $pid)"
    else
        log "pcscd (pid ${pid:-?}) already gone"
    fi
    case "${PCSCD_LOG:-}" in
        /tmp/bankbridge-pcscd.*.log) rm -f "$PCSCD_LOG" ;;
    esac
    rm -f "$STATE"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 install|start|stop|status" >&2
        exit 2
        ;;
esac
