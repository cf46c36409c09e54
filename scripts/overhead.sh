#!/usr/bin/env bash
# What logging and trace export cost a relayed message, in server CPU time
# (user + system, kernel included), under the comparison's relay workload: 100
# rooms of 10 peers, open loop at RATE messages a second for STEP_SECS.
# The release server is pinned to CPU 0; the load generator and the OTLP
# sink (examples/relay_bench.rs, RELAY_BENCH_SINK_ONLY) to CPU 1. Each round
# runs every mode once, in a rotated order, each on a fresh server and store.
#
#   scripts/overhead.sh                    off, logs and export, 3 rounds
#   MODES="logs export" ROUNDS=5 scripts/overhead.sh
#
# Modes (scripts/lib/modes.sh): off, logs, export (every span, over OTLP
# gRPC to the sink), sampled (parent-based, SAMPLE_RATIO, default 1%).
#
# Environment: RATE (40000), STEP_SECS (15), ROUNDS (3), MODES, SAMPLE_RATIO, OUT
# (target/overhead), SRV_CPU / LG_CPU (0 / 1). Prints one line per run
# (CPU per message, p99, spans exported and dropped when the step ended;
# a last batch is exported at shutdown) and the medians; the
# load generator's JSON for each run is kept in $OUT. About a minute per
# run. Not part of CI: a measurement wants a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/modes.sh

RATE=${RATE:-40000}
STEP_SECS=${STEP_SECS:-15}
ROUNDS=${ROUNDS:-3}
read -r -a modes <<< "${MODES:-off logs export}"
OUT=${OUT:-target/overhead}
SRV_CPU=${SRV_CPU:-0}
LG_CPU=${LG_CPU:-1}

cargo build --release --locked --bin chatsubo --bin chatsubo-loadgen --example relay_bench >&2
rm -rf "$OUT"
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

server="" sink=""
cleanup() {
  [ -n "$server" ] && kill -KILL "$server" 2>/dev/null || true
  [ -n "$sink" ] && kill "$sink" 2>/dev/null || true
}
trap cleanup EXIT

sink_port=$(free_port)
RELAY_BENCH_SINK_ONLY=127.0.0.1:$sink_port taskset -c "$LG_CPU" \
  target/release/examples/relay_bench > "$OUT/sink.log" 2>&1 &
sink=$!

# One number from a /metrics text: the sum of every series of a family.
metric() { awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d", s }' "$1"; }

# run MODE ROUND: one fresh server under the workload; appends to results.tsv.
run() {
  local mode=$1 round=$2 dir="$OUT/$1-$2" port
  mkdir -p "$dir"
  port=$(free_port)
  mode_setup "$mode" "$sink_port" || { echo "overhead: unknown mode $mode" >&2; exit 2; }
  env "${MODE_UNSET[@]}" "${mode_env[@]}" \
    taskset -c "$SRV_CPU" target/release/chatsubo --listen "127.0.0.1:$port" \
    --data-dir "$dir/data" --log-dir "$dir/logs" \
    --max-connections 20000 --max-connections-per-ip 20000 \
    --rate-limit-per-sec 1000 --rate-limit-burst 2000 "${mode_flags[@]}" > "$dir/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    curl -sf "127.0.0.1:$port/health" > /dev/null && break
    sleep 0.1
  done
  taskset -c "$LG_CPU" target/release/chatsubo-loadgen --addr "127.0.0.1:$port" \
    --server-pid "$server" --json "$dir/relay.json" \
    relay --rates "$RATE" --step-secs "$STEP_SECS" > "$dir/loadgen.txt" 2>&1
  curl -sf "127.0.0.1:$port/metrics" > "$dir/metrics.txt"
  kill -TERM "$server"
  wait "$server" || true
  server=""
  python3 - "$dir/relay.json" "$mode" "$round" \
    "$(metric "$dir/metrics.txt" chatsubo_spans_exported_total)" \
    "$(metric "$dir/metrics.txt" chatsubo_spans_dropped_total)" >> "$OUT/results.tsv" <<'EOF'
import json, sys
path, mode, round_, exported, dropped = sys.argv[1:]
step = json.load(open(path))["results"][0]
print("\t".join([mode, round_, "%.2f" % step["server_cpu_us_per_msg"],
                 "%.2f" % step["latency_ms"]["p99"], "%.6f" % step["delivered_ratio"],
                 exported, dropped]))
EOF
  tail -1 "$OUT/results.tsv"
}

printf 'mode\tround\tsrv_us_per_msg\tp99_ms\tdelivered\tspans_exported\tspans_dropped\n'
: > "$OUT/results.tsv"
for round in $(seq "$ROUNDS"); do
  n=${#modes[@]}
  for i in $(seq 0 $((n - 1))); do
    run "${modes[$(((i + round - 1) % n))]}" "$round"
  done
done

python3 - "$OUT/results.tsv" <<'EOF'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
modes = list(dict.fromkeys(r[0] for r in rows))
cpu = {m: statistics.median(float(r[2]) for r in rows if r[0] == m) for m in modes}
p99 = {m: statistics.median(float(r[3]) for r in rows if r[0] == m) for m in modes}
print("\nmedians over the rounds:")
for mode in modes:
    note = ""
    if mode in ("export", "sampled") and "logs" in cpu:
        note = "  (%+.0f%% against logs)" % ((cpu[mode] / cpu["logs"] - 1) * 100)
    print("  %-7s %6.2f us/msg  p99 %6.2f ms%s" % (mode, cpu[mode], p99[mode], note))
EOF
