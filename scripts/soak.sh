#!/usr/bin/env bash
# The soak run (and, with churn, the memory-growth check): the release server
# pinned to CPU 0 under steady load from chatsubo-loadgen pinned to CPU 1,
# sampled every SAMPLE_SECS: resident memory, store size on disk, log size,
# and every drop, kick and error counter of /metrics. Prints the samples
# and a verdict; writes them to $OUT/samples.csv and $OUT/summary.txt.
#
#   scripts/soak.sh                       30 minutes of relays at 10,000/s
#                                         (1,000 peers in 100 rooms)
#   CHURN_WORKERS=20 MINUTES=10 scripts/soak.sh
#                                         relays plus connect/join/close churn
#                                         (each worker pausing CHURN_PAUSE_MS,
#                                         100, between cycles)
#
# Environment: MINUTES (30), RATE (relays a second, 10000), CHURN_WORKERS
# (0: none), CHURN_PAUSE_MS (100), SAMPLE_SECS (30), OUT (target/soak),
# SRV_CPU / LG_CPU (0 / 1), PORT (18090), SRVARGS (more server flags, e.g.
# "--store-cache-mb 8").
#
# Verdict: the run passes when nothing was dropped or kicked, the relays
# were all delivered, RSS at the end is within 10% of the first minute's,
# and (without churn, which adds history by design) the store at the end is
# within 10% of its size after the first minute.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-30}
RATE=${RATE:-10000}
CHURN_WORKERS=${CHURN_WORKERS:-0}
CHURN_PAUSE_MS=${CHURN_PAUSE_MS:-100}
SAMPLE_SECS=${SAMPLE_SECS:-30}
OUT=${OUT:-target/soak}
SRV_CPU=${SRV_CPU:-0}
LG_CPU=${LG_CPU:-1}
PORT=${PORT:-18090}
SECS=$((MINUTES * 60))

cargo build --release --bins
rm -rf "$OUT"
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

taskset -c "$SRV_CPU" target/release/chatsubo --listen "127.0.0.1:$PORT" \
  --data-dir "$OUT/data" --log-dir "$OUT/logs" \
  --max-connections 20000 --max-connections-per-ip 20000 \
  --rate-limit-per-sec 1000 --rate-limit-burst 2000 ${SRVARGS:-} > "$OUT/server.log" 2>&1 &
SERVER=$!
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  kill -TERM "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 100); do
  curl -sf "127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.1
done

LOADGEN=(taskset -c "$LG_CPU" target/release/chatsubo-loadgen --addr "127.0.0.1:$PORT" --server-pid "$SERVER")
# One step a minute, so that the table shows when anything went wrong (each
# step ends with 1 s in which the last relays arrive and nothing is sent).
RATES=$RATE
for _ in $(seq 2 "$MINUTES"); do RATES="$RATES,$RATE"; done
"${LOADGEN[@]}" --json "$OUT/relay.json" relay --rates "$RATES" --step-secs 59 --drain-secs 1 \
  > "$OUT/relay.txt" 2>&1 &
PIDS+=($!)
if [ "$CHURN_WORKERS" -gt 0 ]; then
  sleep 10 # the relay peers join first
  "${LOADGEN[@]}" --json "$OUT/churn.json" churn --workers "$CHURN_WORKERS" \
    --pause-ms "$CHURN_PAUSE_MS" --secs "$((SECS - 10))" > "$OUT/churn.txt" 2>&1 &
  PIDS+=($!)
fi

# One number from /metrics: the sum of every series of a family.
metric() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d", s }' "$OUT/metrics.txt"; }

COUNTERS="chatsubo_dropped_messages_total chatsubo_kicks_total chatsubo_log_lines_dropped_total chatsubo_spans_dropped_total chatsubo_storage_errors_total chatsubo_websocket_errors_total"
printf 'secs,rss_kb,store_bytes,log_bytes,connections,analytics_dropped,%s\n' "${COUNTERS// /,}" > "$OUT/samples.csv"
printf '%6s %9s %12s %10s %6s  %s\n' secs rss_kb store_bytes log_bytes conns "drops/kicks/errors"
START=$(date +%s)
while kill -0 "${PIDS[0]}" 2>/dev/null; do
  sleep "$SAMPLE_SECS"
  kill -0 "$SERVER" 2>/dev/null || { echo "the server died"; exit 1; }
  now=$(( $(date +%s) - START ))
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER/status")
  store=$(du -sb "$OUT/data" | cut -f1)
  logs=$(du -sb "$OUT/logs" | cut -f1)
  curl -sf "127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt" || continue
  conns=$(metric chatsubo_active_connections)
  adrop=$(awk '/^chatsubo_analytics_events_total\{result="dropped"\}/ { printf "%d", $2 }' "$OUT/metrics.txt")
  line="$now,$rss,$store,$logs,$conns,${adrop:-0}"
  counts=""
  for c in $COUNTERS; do
    v=$(metric "$c")
    line="$line,$v"
    counts="$counts $v"
  done
  echo "$line" >> "$OUT/samples.csv"
  printf '%6s %9s %12s %10s %6s  %s\n' "$now" "$rss" "$store" "$logs" "$conns" "${adrop:-0}$counts"
done
wait "${PIDS[@]}" || true
PIDS=()

python3 - "$OUT" "$CHURN_WORKERS" <<'PY' | tee "$OUT/summary.txt"
import csv, json, sys
out, churn = sys.argv[1], int(sys.argv[2])
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
first = next(r for r in rows if int(r["secs"]) >= 60)
# The end of the load: the last sample taken with the peers still on (the
# very last one may come after they left).
last = [r for r in rows if int(r["connections"]) > 0][-1]
relay = json.load(open(f"{out}/relay.json"))
steps = relay["results"]
sent = sum(s["sent"] for s in steps)
got = sum(s["delivered"] for s in steps)
delivered = got / sent if sent else 0.0
worst = max(steps, key=lambda s: s["latency_ms"]["p999"])
print(f"relays: {sent} sent, {got} delivered in {len(steps)} one-minute steps")
print("p99 ms by minute: " + " ".join(f"{s['latency_ms']['p99']:.1f}" for s in steps))
print(f"worst minute: #{steps.index(worst) + 1}, p99 {worst['latency_ms']['p99']:.1f} ms, p99.9 {worst['latency_ms']['p999']:.1f} ms, max {worst['latency_ms']['max']:.1f} ms")
counters = [k for k in rows[0] if k.endswith("_total") or k == "analytics_dropped"]
bad = {k: int(rows[-1][k]) for k in counters if k != "chatsubo_storage_errors_total" and int(rows[-1][k]) > 0}
rss_growth = int(last["rss_kb"]) / int(first["rss_kb"]) - 1
store_growth = int(last["store_bytes"]) / int(first["store_bytes"]) - 1
print(f"duration: {last['secs']} s, samples: {len(rows)}")
print(f"RSS: {int(first['rss_kb'])/1024:.1f} MB after the first minute, {int(last['rss_kb'])/1024:.1f} MB at the end ({rss_growth:+.1%})")
print(f"store on disk: {int(first['store_bytes'])/1e6:.2f} MB after the first minute, {int(last['store_bytes'])/1e6:.2f} MB at the end ({store_growth:+.1%})")
print(f"peak RSS: {max(int(r['rss_kb']) for r in rows)/1024:.1f} MB; logs: {int(last['log_bytes'])/1e6:.2f} MB")
print(f"relays delivered: {delivered}")
print(f"drops, kicks and errors at the end: {bad or 'none'}; storage errors: {rows[-1]['chatsubo_storage_errors_total']}")
ok = not bad and abs(rss_growth) <= 0.10 and (churn > 0 or abs(store_growth) <= 0.10) and float(delivered) >= 1.0
print("verdict:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
