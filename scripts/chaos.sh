#!/usr/bin/env bash
# Crash cycles under load. chatsubo-loadgen's chaos workload starts the
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
# (default target/bench/results-chaos.json). The server's data, logs and
# stderr stay in target/bench/chaos/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/workload.sh

workload_setup chaos
args=()
if [ "${QUICK:-0}" = 1 ]; then
  args=(--clients 100 --cycles 3 --load-secs 2)
fi
workload_exec 900 chaos "${args[@]}" "$@"
