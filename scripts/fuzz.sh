#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted bytes (fuzz/):
#
#   scripts/fuzz.sh                      every target, 60 s each
#   scripts/fuzz.sh --seconds 1800 tlv   one target, 30 minutes
#   scripts/fuzz.sh --runs 10000000      every target, up to 10 million inputs
#
# Needs the nightly toolchain (rustup) and cargo-fuzz, which it installs
# from crates.io when missing. Each target starts from its committed seeds
# (fuzz/seeds/TARGET) and keeps what it learns in fuzz/work/corpus/TARGET;
# an input that crashes, hangs (over 10 s) or takes over 2 GiB is saved in
# fuzz/artifacts/TARGET and the script exits 1. Prints a table of
# executions and coverage per target.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "fuzz.sh: $*" >&2; }

seconds=60
runs=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) break ;;
    esac
done

if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    # Every target but the seed writer.
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz | grep -vx make_seeds)
fi

log "building the targets (nightly, with sanitizers)"
cargo +nightly fuzz build --fuzz-dir fuzz
rows=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/corpus/$t" "fuzz/artifacts/$t"
    out="fuzz/work/$t.log"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    limit="${seconds} s"
    if [ "$runs" -gt 0 ]; then
        args+=(-runs="$runs")
        limit="$limit or $runs runs"
    fi
    log "$t: fuzzing ($limit, whichever comes first)"
    status=ok
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/work/corpus/$t" "fuzz/seeds/$t" -- "${args[@]}" >"$out" 2>&1; then
        status="FAILED (see $out and fuzz/artifacts/$t)"
        failed=1
    fi
    execs=$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$out" || true) | awk '{print $2}' | tail -1)
    secs=$( (grep -o 'Done [0-9]* runs in [0-9]* second' "$out" || true) | awk '{print $5}' | tail -1)
    cov=$( (grep -o 'cov: [0-9]* ft: [0-9]*' "$out" || true) | tail -1 | awk '{print $2 " / " $4}')
    corpus=$(find "fuzz/work/corpus/$t" -type f | wc -l)
    rows+=("| $t | ${execs:-?} | ${secs:-$seconds} | ${cov:-?} | $corpus | $status |")
done
echo
echo "| target | executions | seconds | coverage (edges / features) | corpus | result |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit "$failed"
