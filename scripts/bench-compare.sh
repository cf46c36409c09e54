#!/usr/bin/env bash
# The side-by-side benchmark: Chatsubo, matchbox_server 0.15 and
# peerjs-server 1.0.2 under the same three workloads (idle, relay, churn) of
# chatsubo-loadgen, each server pinned to CPU 0 and the load generator to
# CPU 1, all on 127.0.0.1. Writes everything under target/bench/compare/:
# the load generator's results-*.json, the machine, versions and commands,
# report.md and two PNG plots. Nothing is written into docs/: report.md
# opens with this run's rows of the table in docs/performance.md, which is
# updated from it by hand.
#
#   scripts/bench-compare.sh              the full run (about 15 minutes);
#                                         run it on a quiet machine only
#   QUICK=1 scripts/bench-compare.sh      a functional check in about 2 minutes
#                                         (small N, one short step), written
#                                         under target/bench/quick/
#
# Environment: SERVERS (default "chatsubo chatsubo-matchbox chatsubo-peerjs
# matchbox peerjs"; chatsubo-matchbox is Chatsubo driven through its
# /matchbox endpoint, the same client bytes as matchbox_server gets, and
# chatsubo-peerjs through /peerjs as peerjs-server), IDLE_NS (idle connection
# counts), SRV_CPU / LG_CPU (default 0 / 1).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
SERVERS=${SERVERS:-"chatsubo chatsubo-matchbox chatsubo-peerjs matchbox peerjs"}
SRV_CPU=${SRV_CPU:-0}
LG_CPU=${LG_CPU:-1}
PEERS=target/peers
PEERJS=$PEERS/node/node_modules/peer/dist/bin/peerjs.js
LOADGEN=target/release/chatsubo-loadgen
VENV=target/bench-venv
WORK=target/bench-run

# Client and server share the machine's open-files limit per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
MAX_N=$((FD_LIMIT - 500))
if [ "$QUICK" = 1 ]; then
  OUT=target/bench/quick
  IDLE_NS=${IDLE_NS:-"200 1000"}
  RELAY_ARGS=(--rates 2000 --step-secs 3 --drain-secs 1)
  CHURN_ARGS=(--secs 3)
else
  OUT=target/bench/compare
  IDLE_NS=${IDLE_NS:-"1000 5000 10000 $MAX_N"}
  RELAY_ARGS=()
  CHURN_ARGS=()
fi

say() { printf '\n=== %s\n' "$*"; }

# --- the servers to compare, installed locally when missing ----------------------
if [ ! -x "$PEERS/bin/matchbox_server" ]; then
  say "installing matchbox_server 0.15.0 into $PEERS"
  cargo install matchbox_server --version '=0.15.0' --locked --root "$PEERS"
fi
if [ ! -f "$PEERJS" ]; then
  say "installing peer@1.0.2 (peerjs-server) into $PEERS/node"
  mkdir -p "$PEERS/node"
  (cd "$PEERS/node" && npm install --no-audit --no-fund --loglevel=error peer@1.0.2)
fi
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  say "installing matplotlib into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet matplotlib
fi

say "building chatsubo and chatsubo-loadgen (release)"
cargo build --release --locked --bin chatsubo --bin chatsubo-loadgen

# --- bookkeeping ----------------------------------------------------------------------
# $OUT holds this comparison's results only: each run starts it afresh.
rm -rf "${OUT:?}"
mkdir -p "$OUT"
: > "$OUT/commands.txt"
{
  echo "date (UTC):   $(date -u '+%Y-%m-%d %H:%M')"
  echo "cores:        $(nproc) ($(grep -c ^processor /proc/cpuinfo) in /proc/cpuinfo)"
  echo "CPU:          $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory:       $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "kernel:       $(uname -r)"
  echo "open files:   $FD_LIMIT per process"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) at the start"
} > "$OUT/machine.txt"
busy=$(pgrep -c -x 'rustc|cargo' || true)
{
  if [ "$QUICK" = 1 ]; then
    echo "**A functional check (QUICK=1), not a measurement.**"
  fi
  echo "At the start: load average $(cut -d' ' -f1 /proc/loadavg), ${busy:-0} cargo/rustc processes running."
} > "$OUT/conditions.txt"
{
  echo "- chatsubo: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (with uncommitted changes)'), release build, JSON logs to a file, metrics on, as shipped"
  echo "- matchbox_server: $(cargo install --list --root "$PEERS" | grep -m1 '^matchbox_server' | tr -d :) (cargo install matchbox_server --version =0.15.0), its default logging to a file"
  echo "- peerjs-server: peer $(node -p "require('./$PEERS/node/node_modules/peer/package.json').version") on node $(node --version), its default logging to a file"
} > "$OUT/versions.txt"

SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

label() {
  case $1 in
    chatsubo) echo chatsubo ;;
    chatsubo-matchbox) echo chatsubo-matchbox ;;
    chatsubo-peerjs) echo chatsubo-peerjs ;;
    matchbox) echo matchbox_server ;;
    peerjs) echo peerjs-server ;;
  esac
}
port() {
  case $1 in
    chatsubo) echo 18080 ;;
    chatsubo-matchbox) echo 18081 ;;
    chatsubo-peerjs) echo 18082 ;;
    matchbox) echo 13536 ;;
    peerjs) echo 19000 ;;
  esac
}

# Starts server $1 fresh, pinned; sets SERVER_PID once its port answers.
start_server() {
  local name=$1 p
  p=$(port "$name")
  rm -rf "${WORK:?}/$name"
  mkdir -p "$WORK/$name"
  local cmd
  case $name in
    chatsubo | chatsubo-matchbox | chatsubo-peerjs)
      cmd=(target/release/chatsubo --listen "127.0.0.1:$p"
        --data-dir "$WORK/$name/data" --log-dir "$WORK/$name/logs"
        --max-connections 20000 --max-connections-per-ip 20000
        --rate-limit-per-sec 1000 --rate-limit-burst 2000) ;;
    matchbox) cmd=("$PEERS/bin/matchbox_server" "127.0.0.1:$p") ;;
    peerjs) cmd=(node "$PEERJS" --host 127.0.0.1 --port "$p" --concurrent_limit 20000) ;;
  esac
  echo "taskset -c $SRV_CPU ${cmd[*]} > $WORK/$name/server.log 2>&1 &" >> "$OUT/commands.txt"
  taskset -c "$SRV_CPU" "${cmd[@]}" > "$WORK/$name/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      sleep 0.5
      return 0
    fi
    sleep 0.1
  done
  echo "server $name did not open port $p; its log:" >&2
  tail -20 "$WORK/$name/server.log" >&2
  exit 1
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  # Let the closed connections' sockets go before the next run.
  sleep 2
}

# Runs the load generator, pinned and bounded: loadgen SERVER SECONDS JSON ARGS...
loadgen() {
  local name=$1 limit=$2 json=$3
  shift 3
  local protocol=("$name")
  [ "$name" = chatsubo-matchbox ] && protocol=(matchbox --path-prefix /matchbox)
  [ "$name" = chatsubo-peerjs ] && protocol=(peerjs --path-prefix /peerjs)
  local cmd=("$LOADGEN" --protocol "${protocol[@]}" --addr "127.0.0.1:$(port "$name")"
    --server-pid "$SERVER_PID" --label "$(label "$name")" --json "$json" "$@")
  echo "timeout $limit taskset -c $LG_CPU ${cmd[*]}" \
    | sed "s/--server-pid $SERVER_PID /--server-pid \$SERVER_PID /" >> "$OUT/commands.txt"
  timeout --signal=INT --kill-after=10 "$limit" taskset -c "$LG_CPU" "${cmd[@]}"
}

for name in $SERVERS; do
  lbl=$(label "$name")
  echo "# $lbl" >> "$OUT/commands.txt"
  for n in $IDLE_NS; do
    # Idle memory is the server's own, whichever protocol joined it.
    [[ $name == chatsubo-* ]] && break
    if [ "$n" -gt "$MAX_N" ]; then
      echo "skipping idle N=$n: over the open-files limit ($FD_LIMIT)"
      continue
    fi
    say "$lbl: idle, $n connections"
    start_server "$name"
    loadgen "$name" 400 "$OUT/results-$lbl-idle-$n.json" idle --connections "$n"
    stop_server
  done
  say "$lbl: relay"
  start_server "$name"
  loadgen "$name" 300 "$OUT/results-$lbl-relay.json" relay "${RELAY_ARGS[@]}"
  stop_server
  say "$lbl: churn"
  start_server "$name"
  loadgen "$name" 120 "$OUT/results-$lbl-churn.json" churn "${CHURN_ARGS[@]}"
  stop_server
done
echo "At the end: load average $(cut -d' ' -f1 /proc/loadavg), $(pgrep -c -x 'rustc|cargo' || true) cargo/rustc processes running." >> "$OUT/conditions.txt"

say "writing $OUT/report.md and the plots"
"$VENV/bin/python" scripts/bench-report.py "$OUT" "$OUT/report.md" "$OUT"
