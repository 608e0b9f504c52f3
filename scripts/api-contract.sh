#!/usr/bin/env bash
# The API contract, checked from outside: schemathesis (an independent
# OpenAPI fuzzer from PyPI) runs every check it has (`--checks all`) against
# a `bankbridge serve` that holds synced data, a registered virtual card,
# flow checks and the BankID gateway, and must report no failure.
#
#   scripts/api-contract.sh          # after `cargo build`; uses target/debug/bankbridge
#
# Needs: target/test-venv with schemathesis (scripts/test.sh installs it),
# and pcscd with vsmartcard's vpcd (scripts/pcscd.sh start) for the card.
# Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "api-contract: $*" >&2; }

BIN="$PWD/target/debug/bankbridge"
PY="${BANKBRIDGE_PYTHON:-$PWD/target/test-venv/bin/python}"
ST="$(dirname "$PY")/schemathesis"
[ -x "$BIN" ] || { log "build first: cargo build (missing $BIN)"; exit 1; }
[ -x "$ST" ] || { log "schemathesis is missing: $(dirname "$PY")/pip install schemathesis"; exit 1; }

work="$(mktemp -d /tmp/bankbridge-contract-XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until URL answers (any HTTP status).
wait_http() {
    for _ in $(seq 300); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    log "nothing answers at $1"
    return 1
}

json_field() { "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

export BANKBRIDGE_HOME="$work/home"
export BANKBRIDGE_DB="$work/home/bankbridge.db"
export BANKBRIDGE_LOG=warn

# The simulated banks and BankID.
sb_port="$(free_port)"
bankid_port="$(free_port)"
"$BIN" sandbox --listen "127.0.0.1:$sb_port" --bankid-port "$bankid_port" \
    --transactions 60 --years 1 >"$work/sandbox.log" 2>&1 &
pids+=($!)
sandbox="http://127.0.0.1:$sb_port"
wait_http "$sandbox/_sandbox/fibank/credentials"

# Synced data.
"$BIN" init >/dev/null
creds="$(curl -fsS "$sandbox/_sandbox/fibank/credentials")"
json_field password <<<"$creds" | "$BIN" connection add --name fibank --connector fibank \
    --base-url "$(json_field base_url <<<"$creds")" --username "$(json_field username <<<"$creds")" \
    --password-stdin >/dev/null
"$BIN" sync >/dev/null
admin="$("$BIN" token create --scope admin --name contract)"

# A virtual card in pcscd's virtual reader: the card of the sandbox's
# NextGenPSD2 bank `be` (seed 1), so it also answers that bank's SCA.
"$BIN" card virtual --profile cap-be --pin 1234 --key-seed xs2a-be-1 --vpcd 127.0.0.1:35963 >"$work/card.log" 2>&1 &
pids+=($!)

# Flow checks against the sandbox's XS2A playground.
mkdir "$work/flows"
cp examples/flows/klarna-xs2a.toml "$work/flows/"
playground="$(curl -fsS "$sandbox/_sandbox/xs2a-playground/credentials")"
export BANKBRIDGE_CHECK_XS2A_API_TOKEN="$(json_field api_token <<<"$playground")"
export BANKBRIDGE_CHECK_XS2A_PASSWORD=123456
export BANKBRIDGE_VAR_base_url="$sandbox/xs2a-playground"

port="$(free_port)"
api="http://127.0.0.1:$port"
# The fuzzer makes connections to any https host the schema allows (e.g.
# my.fibank.bg) and syncs them: every request off this machine goes to a
# proxy address where nothing listens, so no test traffic leaves loopback
# (not even a DNS lookup).
HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 \
    NO_PROXY=127.0.0.1,localhost,::1 \
    "$BIN" serve --listen "127.0.0.1:$port" --bankid-sandbox "$sandbox" --checks "$work/flows" \
    >"$work/serve.log" 2>&1 &
pids+=($!)
wait_http "$api/healthz"

# Register the card once pcscd sees it (the service reads it).
fi_id="$(curl -fsS -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
    -d '{"name": "Contract Bank", "country": "BE"}' "$api/api/v1/financial-institutions" | json_field id)"
card_id=""
for _ in $(seq 100); do
    if card="$(curl -fsS -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
        -d '{"reader": "Virtual PCD 00 00", "label": "contract card", "account_reference": "BE68539007547034", "pin": "1234"}' \
        "$api/api/v1/financial-institutions/$fi_id/cards")"; then
        card_id="$(json_field id <<<"$card")"
        break
    fi
    sleep 0.2
done
[ -n "$card_id" ] || { log "the virtual card could not be registered (is pcscd with vpcd running?)"; exit 1; }
# An open-banking connection whose consent the card gave (the API shows it).
be="$(curl -fsS "$sandbox/_sandbox/xs2a/be/credentials")"
json_field password <<<"$be" | "$BIN" connection add --name psd2 --connector xs2a --bank sandbox-be \
    --base-url "$sandbox" --username "$(json_field psu_id <<<"$be")" --password-stdin \
    --card "$card_id" --no-check >/dev/null
"$BIN" sync --connection psd2 --sca never >/dev/null
# A round of the flow check, so runs exist.
curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $admin" "$api/api/v1/checks/klarna-xs2a/run"

log "schemathesis against $api (every check, every operation)"
status=0
# Run from the throwaway folder: schemathesis keeps a cache of past crashes
# in its working directory, and a run must not depend on an earlier one.
report_dir="$(realpath -m "${CONTRACT_REPORT_DIR:-target/api-contract}")"
config="$PWD/scripts/schemathesis.toml"
(cd "$work" && "$ST" --config-file "$config" run "$api/api/v1/openapi.json" --checks all -H "Authorization: Bearer $admin" \
    --seed "${CONTRACT_SEED:-1}" --max-examples "${CONTRACT_EXAMPLES:-30}" --workers 1 \
    --request-timeout 40 --no-color --suppress-health-check too_slow \
    --report junit --report-dir "$report_dir") || status=$?
if [ "$status" -ne 0 ]; then
    log "schemathesis found failures (server log: $work/serve.log kept below)"
    tail -n 40 "$work/serve.log" >&2 || true
fi
exit "$status"
