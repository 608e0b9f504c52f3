#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted bytes (fuzz/):
#
#   scripts/fuzz.sh                      every target, 60 s each
#   scripts/fuzz.sh --seconds 1800 tlv   one target, 30 minutes
#   scripts/fuzz.sh --runs 10000000      every target, up to 10 million inputs
#   scripts/fuzz.sh --jobs 2 ...         two targets at a time
#   scripts/fuzz.sh --sanitizer address  with AddressSanitizer (slower)
#
# Needs the nightly toolchain (rustup) and cargo-fuzz, which it installs
# from crates.io when missing. Each target starts from its committed seeds
# (fuzz/seeds/TARGET) and keeps what it learns in fuzz/work/corpus/TARGET;
# an input that crashes, hangs (over 10 s) or takes over 2 GiB is saved in
# fuzz/artifacts/TARGET and the script exits 1. Prints a table of
# executions and coverage per target.
#
# No sanitizer by default: every bankbridge crate forbids `unsafe`, so
# AddressSanitizer finds nothing in our code that Rust's own checks do not
# (bounds, overflow: the targets build with debug assertions), and it
# halves the executions per second.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "fuzz.sh: $*" >&2; }

seconds=60
runs=0
jobs=1
sanitizer=none
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --sanitizer) sanitizer=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
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

# The workspace's release profile strips symbols; a crash report needs them.
export CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
fuzz=(cargo +nightly fuzz)
build_args=(--fuzz-dir fuzz --features libfuzzer --sanitizer "$sanitizer")

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir fuzz)
fi

log "building the targets (nightly, sanitizer: $sanitizer)"
"${fuzz[@]}" build "${build_args[@]}"

# One target's run; its table row goes to fuzz/work/TARGET.row.
run_one() {
    local t=$1 out="fuzz/work/$1.log" status=ok limit="${seconds} s"
    mkdir -p "fuzz/work/corpus/$t" "fuzz/artifacts/$t"
    local args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [ "$runs" -gt 0 ]; then
        args+=(-runs="$runs")
        limit="$limit or $runs runs"
    fi
    log "$t: fuzzing ($limit, whichever comes first)"
    if ! "${fuzz[@]}" run "${build_args[@]}" "$t" "fuzz/work/corpus/$t" "fuzz/seeds/$t" -- "${args[@]}" >"$out" 2>&1; then
        status="FAILED (see $out and fuzz/artifacts/$t)"
    fi
    local execs secs cov corpus
    execs=$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$out" || true) | awk '{print $2}' | tail -1)
    secs=$( (grep -o 'Done [0-9]* runs in [0-9]* second' "$out" || true) | awk '{print $5}' | tail -1)
    cov=$( (grep -o 'cov: [0-9]* ft: [0-9]*' "$out" || true) | tail -1 | awk '{print $2 " / " $4}')
    corpus=$(find "fuzz/work/corpus/$t" -type f | wc -l)
    echo "| $t | ${execs:-?} | ${secs:-$seconds} | ${cov:-?} | $corpus | $status |" >"fuzz/work/$t.row"
}

mkdir -p fuzz/work
running=0
for t in "${targets[@]}"; do
    rm -f "fuzz/work/$t.row"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

echo
echo "| target | executions | seconds | coverage (edges / features) | corpus | result |"
echo "|---|---|---|---|---|---|"
failed=0
for t in "${targets[@]}"; do
    if [ -f "fuzz/work/$t.row" ]; then cat "fuzz/work/$t.row"; else echo "| $t | ? | ? | ? | ? | no result |"; failed=1; fi
    grep -q '| ok |$' "fuzz/work/$t.row" 2>/dev/null || failed=1
done
exit "$failed"
