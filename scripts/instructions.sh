#!/usr/bin/env bash
# User-space instructions per relayed message (or per churn cycle), counted by valgrind's
# callgrind: a number that does not move with what else the machine runs,
# for A/B work where wall-clock CPU per message is too noisy (on a shared VM
# it moved by a quarter within the hour on the same code).
#
# For each mode the release server runs under callgrind twice, with
# `chatsubo-loadgen relay --rooms 10 --rates 500` for a SHORT and a LONG step
# (default 4 s and 20 s); the difference of the two totals over the
# difference of the messages sent is the cost of one relayed message
# (start-up, joins and shutdown cancel out). The two runs of a mode go side
# by side, one per core. Modes:
#
#   off      --log-level off, no export
#   logs     JSON logs as shipped
#   export   logs + OTLP export of every span, to the OTLP sink of
#            examples/relay_bench.rs (RELAY_BENCH_SINK_ONLY) on a free port
#   sampled  the same with parent-based ratio sampling at SAMPLE_RATIO
#            (default 0.01), as docs/observability.md advises a busy server
#   matchbox matchbox_server 0.15 (target/peers/bin, as scripts/bench-compare.sh
#            installs it) under the same load through its own protocol
#            (`chatsubo-loadgen --protocol matchbox`): the count to compare with
#
#   scripts/instructions.sh                 logs and export
#   scripts/instructions.sh off logs export
#   BIN=/path/to/chatsubo scripts/instructions.sh logs   another build
#   WORKLOAD=churn scripts/instructions.sh logs   per churn cycle instead:
#       `chatsubo-loadgen churn --workers 10 --pause-ms 20` (connect,
#       welcome, join, close), the cycles counted from its JSON
#   LOADGEN=/path/to/chatsubo-loadgen   the load generator of another build
#
# Prints, per mode: instructions per message in all, and without sled's I/O
# threads (callgrind runs one thread at a time, so a thread that spins on
# sled's lazily started pool burns instructions it would not burn on real
# cores; a run where that part is large is an outlier to run again).
# About 2 minutes per mode. Needs valgrind; not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/modes.sh

command -v valgrind >/dev/null || { echo "instructions: valgrind not found (apt-get install valgrind)" >&2; exit 2; }
SHORT=${SHORT:-4}
LONG=${LONG:-20}
WORKLOAD=${WORKLOAD:-relay}
case $WORKLOAD in
  relay) unit=message ;;
  churn) unit=cycle ;;
  *) echo "instructions: WORKLOAD is relay or churn, not $WORKLOAD" >&2; exit 2 ;;
esac
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(logs export)

cargo build --release --locked --bins --example relay_bench >&2
if [[ " ${modes[*]} " == *" matchbox "* && ! -x target/peers/bin/matchbox_server ]]; then
  echo "instructions: target/peers/bin/matchbox_server is missing (scripts/bench-compare.sh installs it)" >&2
  exit 2
fi
BIN=${BIN:-target/release/chatsubo}
LOADGEN=${LOADGEN:-target/release/chatsubo-loadgen}
work=$(mktemp -d)
sink=""
cleanup() {
  [ -n "$sink" ] && kill "$sink" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

sink_port=""
if [[ " ${modes[*]} " == *" export "* || " ${modes[*]} " == *" sampled "* ]]; then
  sink_port=$(free_port)
  RELAY_BENCH_SINK_ONLY=127.0.0.1:$sink_port target/release/examples/relay_bench >"$work/sink.log" 2>&1 &
  sink=$!
fi

# one_run DIR MODE SECS: the server under callgrind for one step length.
one_run() {
  local dir=$1 mode=$2 secs=$3 port
  mkdir -p "$dir"
  port=$(free_port)
  # Ready when /health answers 200; matchbox_server has no health
  # endpoint, so any answer on its port will do.
  local server protocol=() ready=(-fsS)
  if [ "$mode" = matchbox ]; then
    server=(target/peers/bin/matchbox_server "127.0.0.1:$port")
    mode_env=()
    protocol=(--protocol matchbox)
    ready=(-sS)
  else
    mode_setup "$mode" "$sink_port" || { echo "instructions: unknown mode $mode" >&2; return 2; }
    server=("$BIN" --listen "127.0.0.1:$port" --data-dir "$dir/data" --log-dir "$dir/logs"
      --rate-limit-per-sec 1000 --rate-limit-burst 2000 "${mode_flags[@]}")
  fi
  env "${MODE_UNSET[@]}" "${mode_env[@]}" valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$dir/cg.out" \
    "${server[@]}" >"$dir/server.log" 2>"$dir/valgrind.log" &
  local pid=$!
  for _ in $(seq 300); do
    curl "${ready[@]}" -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && break
    sleep 0.2
  done
  if [ "$WORKLOAD" = churn ]; then
    timeout --signal=INT 300 "$LOADGEN" "${protocol[@]}" --addr "127.0.0.1:$port" --json "$dir/loadgen.json" \
      churn --workers 10 --pause-ms 20 --warmup-secs 0 --secs "$secs" >"$dir/loadgen.txt" 2>&1
  else
    timeout --signal=INT 300 "$LOADGEN" "${protocol[@]}" --addr "127.0.0.1:$port" \
      relay --rooms 10 --rates 500 --step-secs "$secs" >"$dir/loadgen.txt" 2>&1
  fi
  kill -TERM "$pid"
  wait "$pid" || true
}

# totals DIR: "<all instructions> <sled's I/O threads> <messages sent or cycles>"
totals() {
  local ann all sled sent
  ann=$(callgrind_annotate --inclusive=yes "$1/cg.out" 2>/dev/null)
  all=$(grep -m1 'PROGRAM TOTALS' <<<"$ann" | awk '{print $1}' | tr -d ,)
  sled=$(grep -m1 'sled::threadpool::perform_work \[' <<<"$ann" | awk '{print $1}' | tr -d , || true)
  if [ "$WORKLOAD" = churn ]; then
    sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["cycles"])' "$1/loadgen.json")
  else
    sent=$(sed -n 's/.*step [0-9]*\/s: sent \([0-9]*\),.*/\1/p' "$1/loadgen.txt" | head -n1)
  fi
  echo "$all ${sled:-0} ${sent:-0}"
}

printf '%-8s %22s %32s\n' mode "instructions/$unit" "without sled's I/O threads"
for mode in "${modes[@]}"; do
  one_run "$work/$mode-short" "$mode" "$SHORT" &
  short=$!
  one_run "$work/$mode-long" "$mode" "$LONG"
  wait "$short"
  read -r a1 s1 m1 < <(totals "$work/$mode-short")
  read -r a2 s2 m2 < <(totals "$work/$mode-long")
  if [ "$m2" -le "$m1" ]; then
    echo "instructions: $mode: the long run counted no more ${unit}s than the short one" >&2
    exit 1
  fi
  printf '%-8s %22d %32d\n' "$mode" $(((a2 - a1) / (m2 - m1))) $(((a2 - s2 - a1 + s1) / (m2 - m1)))
done
