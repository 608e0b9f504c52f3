#!/usr/bin/env bash
# Run every bankbridge test on this machine, installing what the tests need:
# Debian packages (pkg-config, the PostgreSQL server if missing), Python's
# `requests` (the client-fidelity test) and `pybankid` (the BankID simulator's
# interoperability test) from PyPI into a virtualenv, a throwaway PostgreSQL
# on loopback that is stopped and deleted at the end, and pcscd with
# vsmartcard's vpcd driver for the card tests (scripts/pcscd.sh; stopped at
# the end if started here). Then the user story's Playwright spec runs
# against the sandbox (npm packages from the npm registry, pinned).
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p bankbridge-store   # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "test.sh: $*" >&2; }

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    if ! command -v python3 >/dev/null 2>&1; then
        missing+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: install Rust (https://rustup.rs) and run again"
    exit 1
fi

# Python for the tests that act as the users' own Python code: `requests`
# drives the simulated bank the way the story author's connector does, and
# pybankid (unmodified, from PyPI) talks to the BankID simulator. Always the
# test virtualenv's interpreter, made anew when it is missing or lacks either.
venv="target/test-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import requests, bankid' >/dev/null 2>&1; then
    log "installing Python requests and pybankid into $venv"
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet requests pybankid
fi
export BANKBRIDGE_PYTHON="$PWD/$venv/bin/python"

# A throwaway PostgreSQL for the store suite and the end-to-end tests.
export BANKBRIDGE_PG_STATE="${BANKBRIDGE_PG_STATE:-$(mktemp -u /tmp/bankbridge-pg-XXXXXX.env)}"
BANKBRIDGE_TEST_PG_URL="$(scripts/pg-throwaway.sh start)"
export BANKBRIDGE_TEST_PG_URL
trap 'scripts/pg-throwaway.sh stop || true' EXIT

# pcscd with the vpcd driver for the card tests (virtual cards on loopback).
# One already running is used and left running; one started here is stopped.
if scripts/pcscd.sh status; then
    export BANKBRIDGE_TEST_PCSCD=1
elif scripts/pcscd.sh start; then
    export BANKBRIDGE_TEST_PCSCD=1
    trap 'scripts/pg-throwaway.sh stop || true; scripts/pcscd.sh stop || true' EXIT
else
    log "pcscd could not be started: the card tests through pcscd will skip (or fail under CI)"
fi

cargo test --workspace "$@"

# The user story's own Playwright spec against the sandbox's XS2A playground
# (tests/xs2a-playwright; npm packages pinned by its lockfile, no browser).
# Only with the whole suite: extra arguments select Rust tests.
if [ "$#" -eq 0 ]; then
    if ! command -v npm >/dev/null 2>&1; then
        if [ -n "${CI:-}" ]; then log "npm is missing: the Playwright spec must run in CI"; exit 1; fi
        log "npm not found: the story's Playwright spec is skipped"
        exit 0
    fi
    sb_dir="$(mktemp -d /tmp/bankbridge-xs2a-XXXXXX)"
    sb_port=$((20000 + RANDOM % 20000))
    target/debug/bankbridge sandbox --listen "127.0.0.1:$sb_port" --no-bankid \
        --db "$sb_dir/sandbox.db" --transactions 10 >"$sb_dir/sandbox.log" 2>&1 &
    sb_pid=$!
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$sb_port/_sandbox/xs2a-playground/credentials" 2>/dev/null && break
        sleep 0.1
    done
    status=0
    SANDBOX_URL="http://127.0.0.1:$sb_port" tests/xs2a-playwright/run.sh || status=$?
    kill "$sb_pid" 2>/dev/null || true
    wait "$sb_pid" 2>/dev/null || true
    [ "$status" -eq 0 ] || { log "the story's Playwright spec failed (sandbox log: $sb_dir/sandbox.log)"; exit "$status"; }
    rm -rf "$sb_dir"
    log "the story's Playwright spec passed against the sandbox"
fi
