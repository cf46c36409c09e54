#!/usr/bin/env bash
# System calls and wake-ups per relayed message (or per churn cycle), of
# Chatsubo and of matchbox_server, counted the way scripts/instructions.sh
# counts instructions: each server runs twice, under `strace -f -c`, with a
# SHORT and a LONG step of the same load (default 3 s and 9 s), and the
# difference of the two counts over the difference of the messages (or
# cycles) is the cost of one; start-up, joins and shutdown cancel out. A
# third and fourth run without strace read the threads' context switches
# from /proc/PID/task/*/schedstat (the times a thread was put on a CPU: its
# wake-ups), the same way.
#
#   scripts/syscalls.sh                  relay, chatsubo and matchbox
#   WORKLOAD=churn scripts/syscalls.sh   churn cycles instead
#   SERVERS=chatsubo scripts/syscalls.sh
#
# Relay: `chatsubo-loadgen relay --rooms 10 --rates RATE` (default 2000/s:
# strace slows every call, and a rate the traced server keeps up with
# counts what it does, not what it does when behind). Churn:
# `chatsubo-loadgen churn --workers 10`. matchbox_server comes from
# target/peers (scripts/bench-compare.sh installs it). Output under
# target/syscalls/; prints one table per server, calls per unit by name.
# Needs strace; not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v strace >/dev/null || { echo "syscalls: strace not found (apt-get install strace)" >&2; exit 2; }
WORKLOAD=${WORKLOAD:-relay}
SERVERS=${SERVERS:-chatsubo matchbox}
SHORT=${SHORT:-3}
LONG=${LONG:-9}
RATE=${RATE:-2000}
OUT=${OUT:-target/syscalls}
MATCHBOX=${MATCHBOX:-target/peers/bin/matchbox_server}
cargo build --release --locked --bins >&2
rm -rf "$OUT"
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# switches PID: context switches of all the process's threads so far.
switches() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{n += $3} END {print n + 0}'
}

# one_run SERVER SECS TRACE DIR: the server (under strace when TRACE is 1)
# for one step; writes DIR/units and DIR/switches (and DIR/strace).
one_run() {
  local server=$1 secs=$2 trace=$3 dir=$4 port pid proto=() cmd
  mkdir -p "$dir"
  port=$(free_port)
  case $server in
    chatsubo) cmd=(target/release/chatsubo --listen "127.0.0.1:$port" --data-dir "$dir/data"
      --log-dir "$dir/logs" --rate-limit-per-sec 1000 --rate-limit-burst 2000) ;;
    matchbox) cmd=("$MATCHBOX" "127.0.0.1:$port"); proto=(--protocol matchbox) ;;
  esac
  if [ "$trace" = 1 ]; then
    taskset -c 0 strace -f -c -o "$dir/strace" "${cmd[@]}" >"$dir/server.log" 2>&1 &
  else
    taskset -c 0 "${cmd[@]}" >"$dir/server.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  if [ "$WORKLOAD" = churn ]; then
    taskset -c 1 target/release/chatsubo-loadgen "${proto[@]}" --addr "127.0.0.1:$port" \
      --json "$dir/loadgen.json" churn --workers 10 --warmup-secs 0 --secs "$secs" >"$dir/loadgen.txt" 2>&1
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["cycles"])' \
      "$dir/loadgen.json" >"$dir/units"
  else
    taskset -c 1 target/release/chatsubo-loadgen "${proto[@]}" --addr "127.0.0.1:$port" \
      relay --rooms 10 --rates "$RATE" --step-secs "$secs" >"$dir/loadgen.txt" 2>&1
    sed -n 's/.*step [0-9]*\/s: sent \([0-9]*\), delivered \([0-9]*\).*/\2/p' "$dir/loadgen.txt" \
      | head -n1 >"$dir/units"
  fi
  # The traced process is strace's child: its threads are under pgrep's.
  local server_pid=$pid
  [ "$trace" = 1 ] && server_pid=$(pgrep -P "$pid" | head -n1)
  switches "$server_pid" >"$dir/switches"
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

unit=message
[ "$WORKLOAD" = churn ] && unit=cycle
for server in $SERVERS; do
  one_run "$server" "$SHORT" 1 "$OUT/$server-short"
  one_run "$server" "$LONG" 1 "$OUT/$server-long"
  one_run "$server" "$SHORT" 0 "$OUT/$server-short-plain"
  one_run "$server" "$LONG" 0 "$OUT/$server-long-plain"
  python3 - "$OUT/$server" "$unit" "$server" <<'EOF'
import sys
base, unit, server = sys.argv[1:]
def table(path):
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0].replace('.', '').isdigit() and f[-1] != 'total':
            out[f[-1]] = int(f[3])
    return out
def units(d): return int(open(f"{d}/units").read().strip() or 0)
s, l = table(f"{base}-short/strace"), table(f"{base}-long/strace")
du = units(f"{base}-long") - units(f"{base}-short")
if du <= 0:
    sys.exit(f"syscalls: {server}: the long run counted no more {unit}s than the short one")
rows = sorted(((l.get(k, 0) - s.get(k, 0)) / du, k) for k in set(s) | set(l))
print(f"{server}: system calls per {unit} (over {du} {unit}s more in the long run)")
total = 0.0
for per, name in reversed(rows):
    if per >= 0.005:
        print(f"  {name:<18} {per:8.2f}")
        total += per
print(f"  {'all':<18} {total:8.2f}")
pu = units(f"{base}-long-plain") - units(f"{base}-short-plain")
sw = int(open(f"{base}-long-plain/switches").read()) - int(open(f"{base}-short-plain/switches").read())
if pu > 0:
    print(f"  wake-ups (context switches of its threads, without strace): {sw / pu:.2f} per {unit}")
EOF
done
