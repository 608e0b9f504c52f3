#!/usr/bin/env bash
# Run every bankbridge test on this machine, installing what the tests need:
# Debian packages (pkg-config, the PostgreSQL server if missing), Python's
# `requests` (the client-fidelity test), Chromium and playwright-core (the
# dashboard's browser test), `pybankid` (the BankID simulator's
# interoperability test), `ofxtools` (the OFX import test) and `schemathesis` (the API contract check,
# scripts/api-contract.sh) from PyPI into a virtualenv, a throwaway PostgreSQL
# on loopback that is stopped and deleted at the end, and pcscd with
# vsmartcard's vpcd driver for the card tests (scripts/pcscd.sh; stopped at
# the end if started here).
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
    if ! command -v python3 >/dev/null 2>&1; then
        missing+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    # Debian's Chromium for the dashboard's browser test (driven by playwright-core).
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    # The plain-text accounting tools that read our beancount and journal exports.
    command -v hledger >/dev/null 2>&1 || missing+=(hledger)
    command -v ledger >/dev/null 2>&1 || missing+=(ledger)
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
# drives the simulated bank the way the story author's connector does,
# pybankid (unmodified, from PyPI) talks to the BankID simulator, ofxtools
# reads our OFX exports as accounting tools do, nordigen (GoCardless's own
# client) runs its quick-start against our simulator, beancount (3, with
# bean-check and bean-query) checks our beancount exports, quiffen reads our
# QIF, pyiso20022 (the ISO 20022 schemas as xsdata bindings) and pycamt check
# and read our camt.053, simplefin4py claims and reads our SimpleFIN server,
# and schemathesis
# fuzzes the API against its OpenAPI document. Always the test virtualenv's
# interpreter, made anew when it is missing or lacks one of them.
venv="target/test-venv"
schemathesis_version="4.32.5"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import requests, bankid, ofxtools, nordigen, beancount, beanquery, quiffen, pycamt, pyiso20022, xsdata, simplefin4py' >/dev/null 2>&1 ||
    [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $schemathesis_version" ]; then
    log "installing Python requests, pybankid, ofxtools, nordigen, beancount, quiffen, pycamt, pyiso20022, simplefin4py and schemathesis $schemathesis_version into $venv"
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet requests pybankid ofxtools "nordigen==1.4.2" "beancount>=3,<4" beanquery \
        "quiffen==4.0.1" "pycamt==1.1.1" "pyiso20022==1.6.2" xsdata "simplefin4py==0.0.18" \
        "schemathesis==$schemathesis_version"
fi
export BANKBRIDGE_PYTHON="$PWD/$venv/bin/python"

# playwright-core for the dashboard's browser test, from the npm registry at
# the version the lock file names (no browser download: Debian's Chromium).
browser_tests="crates/cli/tests/browser"
if command -v npm >/dev/null 2>&1 && [ ! -d "$browser_tests/node_modules/playwright-core" ]; then
    log "installing playwright-core into $browser_tests"
    (cd "$browser_tests" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
fi

# A throwaway PostgreSQL for the store suite and the end-to-end tests.
export BANKBRIDGE_PG_STATE="${BANKBRIDGE_PG_STATE:-$(mktemp -u /tmp/bankbridge-pg-XXXXXX.env)}"
BANKBRIDGE_TEST_PG_URL="$(scripts/pg-throwaway.sh start)"
export BANKBRIDGE_TEST_PG_URL
# Its CA, for the test that connects over TLS with sslmode=verify-full.
BANKBRIDGE_TEST_PG_CA="$(scripts/pg-throwaway.sh ca)"
export BANKBRIDGE_TEST_PG_CA
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

# --no-fail-fast: one red test binary must not hide the others' results.
tests_from=$SECONDS
cargo test --workspace --no-fail-fast "$@"
log "cargo test took $((SECONDS - tests_from)) s"

# The API contract, from outside: schemathesis against a live `serve` with
# synced data, a card, flow checks and the BankID gateway (only with the
# whole suite: extra arguments select Rust tests).
if [ "$#" -eq 0 ]; then
    # `cargo test --workspace` built target/debug/bankbridge already. A
    # `cargo build` here would build it again with other features (the
    # tests' dev-dependencies turn on test-support features): minutes of
    # CI for the same binary.
    [ -x target/debug/bankbridge ] || cargo build -p bankbridge --quiet
    scripts/api-contract.sh
fi
