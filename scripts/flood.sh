#!/usr/bin/env bash
# Issue 8's flood isolation. chatsubo-loadgen's flood workload starts the
# release server itself with its rate limits as shipped (pinned to CPU 0;
# the load generator runs on CPU 1): 99 quiet rooms of 10 relay 5,000
# messages a second in all, open-loop, for a quiet phase and then a flood
# phase of 15 s each; in the flood phase the 10 peers of one more room send
# as fast as they can, ignore RATE_LIMITED and reconnect when kicked. It
# prints the quiet rooms' latency in both phases and their p99 ratio (at
# most 2.0 passes), the flooding room's counts and the server's CPU, writes
# JSON, and exits non-zero when the ratio is over. About 45 s: not part of CI.
#
#   scripts/flood.sh                    the full run
#   QUICK=1 scripts/flood.sh            20 rooms, 4 s phases
#   scripts/flood.sh --rate 2000 …      any other flag of `chatsubo-loadgen flood`
#
# Environment: SRV_CPU / LG_CPU (default 0 / 1); OUT, the JSON file
# (default target/flood/results-flood.json).
set -euo pipefail
cd "$(dirname "$0")/.."

SRV_CPU=${SRV_CPU:-0}
LG_CPU=${LG_CPU:-1}
OUT=${OUT:-target/flood/results-flood.json}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "=== building chatsubo and chatsubo-loadgen (release)"
cargo build --release --locked --bins
echo "=== $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$(pgrep -c -x 'rustc|cargo' || true) cargo/rustc processes running"

args=()
if [ "${QUICK:-0}" = 1 ]; then
  args=(--rooms 20 --rate 1000 --phase-secs 4 --drain-secs 1)
fi
# SIGINT on timeout: the load generator kills its server before it exits.
exec timeout --signal=INT --kill-after=15 300 \
  taskset -c "$LG_CPU" target/release/chatsubo-loadgen --json "$OUT" \
  flood --server-cpu "$SRV_CPU" --work-dir target/flood "${args[@]}" "$@"
