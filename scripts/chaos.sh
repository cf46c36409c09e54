#!/usr/bin/env bash
# Issue 8's crash cycles. chatsubo-loadgen's chaos workload starts the
# release server itself (pinned to CPU 0; the load generator runs on CPU 1),
# puts 1,000 clients in 100 rooms relaying 2,000 messages a second, kills the
# server with SIGKILL 20 times, restarts it on the same data directory and
# port each time and has every client resume, then closes everyone and
# checks the store's sessions against every welcome the clients got.
# Prints the table and the summary, writes JSON, and exits non-zero when an
# expectation fails. About 2 minutes: not part of CI.
#
#   scripts/chaos.sh                    the full run
#   QUICK=1 scripts/chaos.sh            100 clients, 3 cycles (about 15 s)
#   scripts/chaos.sh --cycles 5 …       any other flag of `chatsubo-loadgen chaos`
#
# Environment: SRV_CPU / LG_CPU (default 0 / 1); OUT, the JSON file
# (default target/chaos/results-chaos.json). The server's data, logs and
# stderr stay in target/chaos/.
set -euo pipefail
cd "$(dirname "$0")/.."

SRV_CPU=${SRV_CPU:-0}
LG_CPU=${LG_CPU:-1}
OUT=${OUT:-target/chaos/results-chaos.json}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "=== building chatsubo and chatsubo-loadgen (release)"
cargo build --release --locked --bins
echo "=== $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$(pgrep -c -x 'rustc|cargo' || true) cargo/rustc processes running"

args=()
if [ "${QUICK:-0}" = 1 ]; then
  args=(--clients 100 --cycles 3 --load-secs 2)
fi
# SIGINT on timeout: the load generator kills its server before it exits.
exec timeout --signal=INT --kill-after=15 900 \
  taskset -c "$LG_CPU" target/release/chatsubo-loadgen --json "$OUT" \
  chaos --server-cpu "$SRV_CPU" --work-dir target/chaos "${args[@]}" "$@"
