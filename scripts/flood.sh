#!/usr/bin/env bash
# Flood isolation. chatsubo-loadgen's flood workload starts the release
# server itself with its rate limits as shipped (pinned to CPU 0; the load
# generator runs on CPU 1): 99 quiet rooms of 10 relay 5,000 messages a
# second in all, open-loop, for a quiet phase and then a flood phase of
# 15 s each; in the flood phase the 10 peers of one more room send as fast
# as they can, ignore RATE_LIMITED and reconnect when kicked. It prints the
# quiet rooms' latency in both phases and their p99 ratio (at most 2.0
# passes), the flooding room's counts and the server's CPU, writes JSON,
# and exits non-zero when the ratio is over. About 45 s: not part of CI.
#
#   scripts/flood.sh                    the full run
#   QUICK=1 scripts/flood.sh            20 rooms, 4 s phases
#   scripts/flood.sh --rate 2000 …      any other flag of `chatsubo-loadgen flood`
#
# Environment: SRV_CPU / LG_CPU (default 0 / 1); OUT, the JSON file
# (default target/bench/results-flood.json). The server's data, logs and
# stderr stay in target/bench/flood/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/workload.sh

workload_setup flood
args=()
if [ "${QUICK:-0}" = 1 ]; then
  args=(--rooms 20 --rate 1000 --phase-secs 4 --drain-secs 1)
fi
workload_exec 300 flood "${args[@]}" "$@"
