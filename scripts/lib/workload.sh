# What scripts/chaos.sh and scripts/flood.sh share: each runs one workload
# of chatsubo-loadgen that starts its own release server, the server pinned
# to SRV_CPU and the load generator to LG_CPU (default 0 / 1). Sourced, not
# run, from the repository's root.
#
# Results go under target/bench/ (the JSON file, OUT, defaults to
# target/bench/results-WORKLOAD.json); the server's data, logs and stderr
# go to target/bench/WORKLOAD/.

SRV_CPU=${SRV_CPU:-0}
LG_CPU=${LG_CPU:-1}
BENCH_DIR=target/bench

# workload_setup WORKLOAD: sets OUT's default, raises the open-file limit,
# builds both release binaries and prints what the run happens on.
workload_setup() {
  OUT=${OUT:-$BENCH_DIR/results-$1.json}
  mkdir -p "$BENCH_DIR"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

  echo "=== building chatsubo and chatsubo-loadgen (release)"
  cargo build --release --locked -p chatsubo -p chatsubo-loadgen
  echo "=== $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "$(pgrep -c -x 'rustc|cargo' || true) cargo/rustc processes running"
}

# workload_exec SECONDS WORKLOAD ARGS...: replaces the shell with the
# workload, its flags ARGS after the script's own; interrupted after SECONDS.
workload_exec() {
  local seconds=$1 workload=$2
  shift 2
  # SIGINT on timeout: the load generator kills its server before it exits.
  exec timeout --signal=INT --kill-after=15 "$seconds" \
    taskset -c "$LG_CPU" target/release/chatsubo-loadgen --json "$OUT" \
    "$workload" --server-cpu "$SRV_CPU" --work-dir "$BENCH_DIR/$workload" "$@"
}
