#!/usr/bin/env bash
# Several `bankbridge serve` instances on one PostgreSQL under load, then
# what the database and a webhook receiver recorded (docs/cluster.md):
#
#   BANKBRIDGE_TEST_PG_URL=postgres://…  scripts/cluster-load.sh
#
# Knobs (environment): INSTANCES (3), CONNECTIONS (200), SYNC_EVERY (30,
# seconds), FLOWS (50), FLOW_EVERY (5s), MINUTES (10) or RUN_SECONDS, KILL
# (1: kill -9 the first instance halfway and start it again under its name).
#
# As a throughput benchmark: more work than the instances can do (every
# connection due each second, flows every second), no kill, for 1, 2 and 3
# instances; the table then says how much each process used of the CPU:
#
#   for n in 1 2 3; do INSTANCES=$n CONNECTIONS=300 SYNC_EVERY=1 FLOWS=200 \
#       FLOW_EVERY=1s RUN_SECONDS=120 KILL=0 scripts/cluster-load.sh; done
#
# The flows probe a small local server that answers 500 in every odd minute
# and 200 in every even one, so each check changes health about twice a
# minute; its webhook log is compared with the changes the instances logged. Everything
# listens on 127.0.0.1. Needs target/debug/bankbridge (cargo build), psql
# and python3. Prints a table; exits 1 if a piece of work was done twice.
set -euo pipefail
cd "$(dirname "$0")/.."

INSTANCES=${INSTANCES:-3}
CONNECTIONS=${CONNECTIONS:-200}
SYNC_EVERY=${SYNC_EVERY:-30}
FLOWS=${FLOWS:-50}
FLOW_EVERY=${FLOW_EVERY:-5s}
MINUTES=${MINUTES:-10}
RUN_SECONDS=${RUN_SECONDS:-$((MINUTES * 60))}
KILL=${KILL:-1}
# BANKBRIDGE_BIN: the binary to run (a release build for figures worth quoting).
BIN=${BANKBRIDGE_BIN:-$PWD/target/debug/bankbridge}
ADMIN_URL=${BANKBRIDGE_TEST_PG_URL:?set BANKBRIDGE_TEST_PG_URL to a PostgreSQL admin URL on loopback}

log() { echo "cluster-load: $*" >&2; }
[ -x "$BIN" ] || { log "build first: cargo build"; exit 1; }

work="$(mktemp -d /tmp/bankbridge-cluster-XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

db="bb_cluster_$$"
psql -q "$ADMIN_URL" -c "CREATE DATABASE $db"
DB_URL="${ADMIN_URL%/*}/$db"
export BANKBRIDGE_HOME="$work/home" BANKBRIDGE_DB="$DB_URL"
sql() { psql -qtA "$DB_URL" -c "$1"; }

# The probe target and the webhook receiver, in one small server.
target_port=$(free_port)
cat > "$work/target.py" <<'EOF'
import http.server, json, sys, time
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.startswith("/hook"):
            log.write(json.dumps({"at": time.time(), "alert": json.loads(body)}) + "\n")
            code = 200
        else:
            code = 500 if int(time.time() // 60) % 2 else 200
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
python3 "$work/target.py" "$target_port" "$work/alerts.jsonl" &
target_pid=$!
pids+=($target_pid)

sandbox_port=$(free_port)
"$BIN" sandbox --listen "127.0.0.1:$sandbox_port" --no-bankid --accounts 1 \
    --transactions 100 --years 1 > "$work/sandbox.out" 2> "$work/sandbox.log" &
sandbox_pid=$!
pids+=($sandbox_pid)
for _ in $(seq 100); do grep -q "password" "$work/sandbox.out" 2>/dev/null && break; sleep 0.1; done
read -r _ _ _ base _ user _ pass < <(grep '^fibank' "$work/sandbox.out")

"$BIN" init > /dev/null 2>&1
admin=$("$BIN" token create --scope admin --name load)
log "adding $CONNECTIONS connections to the sandbox's Fibank"
seq "$CONNECTIONS" | xargs -P 2 -I{} sh -c \
    "echo '$pass' | '$BIN' connection add --name c{} --connector fibank --base-url '$base' --username '$user' --password-stdin --no-check --allow-duplicate > /dev/null"
# The CLI refuses intervals under a minute: the setting is written here.
sql "UPDATE connections SET settings = jsonb_set(settings, '{interval_secs}', '$SYNC_EVERY')"

mkdir -p "$work/flows"
cat > "$work/flows/channels.toml" <<EOF
[[channel]]
name = "ops"
type = "webhook"
url = "http://127.0.0.1:$target_port/hook"
EOF
for i in $(seq "$FLOWS"); do
    cat > "$work/flows/f$i.toml" <<EOF
name = "Flow $i"
alerts = ["ops"]

[schedule]
every = "$FLOW_EVERY"

[[steps]]
name = "Probe"
method = "POST"
url = "http://127.0.0.1:$target_port/probe/$i"
assert = [{ status = 200 }]
EOF
done

declare -A ports
start_instance() {
    local name=$1 port=${ports[$1]:-$(free_port)}
    ports[$name]=$port
    "$BIN" serve --listen "127.0.0.1:$port" --instance-name "$name" --scheduler-tick 1 \
        --checks "$work/flows" >> "$work/$name.log" 2>&1 &
    echo $!
}
declare -A pid_of
for k in $(seq "$INSTANCES"); do pid_of[i$k]=$(start_instance "i$k"); pids+=("${pid_of[i$k]}"); done
# CPU time (seconds) of processes, from /proc: user + system.
tck=$(getconf CLK_TCK)
cpu_of() {
    local total=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
postgres_pids() { pgrep -u postgres || true; }
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
commits() { sql "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
instance_pids() { for k in $(seq "$INSTANCES"); do echo "${pid_of[i$k]}"; done; }

started=$(date +%s)
log "$INSTANCES instances up; running $RUN_SECONDS s (work in $work)"
cpu0_serve=$(cpu_of $(instance_pids)); cpu0_pg=$(cpu_of $(postgres_pids))
cpu0_sandbox=$(cpu_of "$sandbox_pid"); cpu0_target=$(cpu_of "$target_pid")
read -r busy0 all0 < <(busy_ticks); commits0=$(commits)
runs0=$(sql "SELECT count(*) FROM check_runs"); syncs0=$(sql "SELECT count(*) FROM sync_jobs WHERE status = 'succeeded'")

half=$((RUN_SECONDS / 2))
sleep "$half"
if [ "$KILL" = 1 ]; then
    log "kill -9 of i1, then i1 again"
    kill -9 "${pid_of[i1]}"
    sleep 12
    pid_of[i1]=$(start_instance i1)
    pids+=("${pid_of[i1]}")
fi
sleep $((RUN_SECONDS - half))
measured=$(( $(date +%s) - started ))
cores() { python3 -c "print(f'{($1 - $2) / $tck / $measured:.2f}')"; }
use_serve=$(cores "$(cpu_of $(instance_pids))" "$cpu0_serve")
use_pg=$(cores "$(cpu_of $(postgres_pids))" "$cpu0_pg")
use_sandbox=$(cores "$(cpu_of "$sandbox_pid")" "$cpu0_sandbox")
use_target=$(cores "$(cpu_of "$target_pid")" "$cpu0_target")
read -r busy1 all1 < <(busy_ticks)
busy_pct=$(( (busy1 - busy0) * 100 / (all1 - all0) ))
commits_per_s=$(( ($(commits) - commits0) / measured ))
runs_measured=$(( $(sql "SELECT count(*) FROM check_runs") - runs0 ))
syncs_measured=$(( $(sql "SELECT count(*) FROM sync_jobs WHERE status = 'succeeded'") - syncs0 ))
for k in $(seq "$INSTANCES"); do kill "${pid_of[i$k]}" 2>/dev/null || true; done
sleep 3
ended=$(date +%s)

# ---- what was recorded
overlaps=$(sql "SELECT count(*) FROM sync_jobs a JOIN sync_jobs b ON a.connection_id = b.connection_id
    AND a.id < b.id AND a.started_at < b.finished_at AND b.started_at < a.finished_at")
syncs=$(sql "SELECT count(*) FROM sync_jobs WHERE status = 'succeeded'")
not_ok=$(sql "SELECT count(*) FROM sync_jobs WHERE status NOT IN ('succeeded', 'running', 'queued')")
gap=$(sql "SELECT coalesce(max(g), 0) FROM (SELECT extract(epoch FROM started_at - lag(started_at)
    OVER (PARTITION BY connection_id ORDER BY started_at)) AS g FROM sync_jobs) x")
per_conn=$(sql "SELECT min(n) || ' to ' || max(n) FROM (SELECT count(*) n FROM sync_jobs GROUP BY connection_id) x")
runs=$(sql "SELECT count(*) FROM check_runs")
dup_rounds=$(sql "SELECT count(*) FROM (SELECT round_id FROM check_runs GROUP BY round_id HAVING count(*) > 1) x")
claims=$(sql "SELECT count(*) FROM check_claims WHERE check_id NOT LIKE 'certificate:%'")
claimers=$(sql "SELECT string_agg(n::text, ' / ' ORDER BY n DESC) FROM (SELECT count(*) n FROM check_claims GROUP BY claimed_by) x")
sync_starts=$(for k in $(seq "$INSTANCES"); do printf '%s ' "i$k=$(grep -c 'sync started' "$work/i$k.log" || true)"; done)
changes=$(cat "$work"/i*.log | grep -c 'checks: .* is now ' || true)
alerts=$(python3 - "$work/alerts.jsonl" <<'EOF'
import json, sys
alerts = [json.loads(l)["alert"] for l in open(sys.argv[1])]
by_check = {}
for a in alerts:
    if not a.get("reminder"):
        by_check.setdefault(a["check_id"], []).append(a["kind"])
repeats = sum(1 for kinds in by_check.values() for x, y in zip(kinds, kinds[1:]) if x == y)
print(sum(len(k) for k in by_check.values()), repeats)
EOF
)
read -r alert_changes alert_repeats <<< "$alerts"

cat <<EOF

| measure | value |
|---|---|
| instances, minutes, kill -9 halfway | $INSTANCES, $(( (ended - started) / 60 )), $KILL |
| connections, sync interval | $CONNECTIONS, ${SYNC_EVERY} s |
| syncs succeeded | $syncs ($(( syncs * 60 / (ended - started) )) per minute) |
| syncs per connection | $per_conn |
| syncs not succeeded | $not_ok |
| overlapping syncs of one connection | $overlaps |
| longest gap between a connection's syncs | ${gap%.*} s |
| syncs started per instance (logs) | $sync_starts |
| flows, cadence | $FLOWS, $FLOW_EVERY |
| check runs stored / slots claimed | $runs / $claims |
| rounds run twice | $dup_rounds |
| slots claimed per instance | $claimers |
| alerts received (non-reminder) | $alert_changes |
| changes of health logged (all instances) | $changes |
| the same alert twice in a row for a check | $alert_repeats |
| throughput over the measured $measured s | $(( syncs_measured * 60 / measured )) syncs/min, $(python3 -c "print(f'{$runs_measured / $measured:.1f}')") check runs/s |
| PostgreSQL transactions committed | $commits_per_s per second |
| CPU used, in cores (of $(nproc)) | instances $use_serve, PostgreSQL $use_pg, sandbox $use_sandbox, probe target $use_target |
| machine busy | $busy_pct % |
EOF
psql -q "$ADMIN_URL" -c "DROP DATABASE $db WITH (FORCE)" || true
[ "$overlaps" = 0 ] && [ "$dup_rounds" = 0 ] && [ "$alert_repeats" = 0 ]
