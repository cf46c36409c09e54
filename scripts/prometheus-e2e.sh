#!/usr/bin/env bash
# End-to-end check of the shipped alert rules: a real Chatsubo and a real
# Prometheus (Debian package `prometheus`) on loopback, Prometheus loading
# deploy/prometheus/alerts.yml unchanged but scraping and evaluating every
# second; room-full rejections are caused with examples/room_full.rs, and
# Prometheus's HTTP API must show ChatsuboRoomCapacityRejections pending or
# firing within 60 s; also every alert rule evaluates without error and the
# real Prometheus accepts every query of the Grafana dashboard.
#
# Builds nothing. Usage:
#   scripts/prometheus-e2e.sh [CHATSUBO_BIN] [ROOM_FULL_CLIENT]
# defaults: target/debug/chatsubo and target/debug/examples/room_full
# (`cargo build --bin chatsubo --example room_full`; `cargo test` builds both).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath -m "${1:-$ROOT/target/debug/chatsubo}")
CLIENT=$(realpath -m "${2:-$(dirname "$BIN")/examples/room_full}")
ALERT=ChatsuboRoomCapacityRejections
WAIT_SECS=${E2E_WAIT_SECS:-60}

fail() { echo "prometheus-e2e: FAIL: $*" >&2; exit 1; }
say() { echo "prometheus-e2e: $*"; }

for tool in prometheus promtool curl; do
    command -v "$tool" >/dev/null || fail "'$tool' not found (apt-get install -y prometheus curl)"
done
[ -x "$BIN" ] || fail "no chatsubo binary at $BIN (cargo build --bin chatsubo)"
[ -x "$CLIENT" ] || fail "no room_full client at $CLIENT (cargo build --example room_full)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chatsubo-e2e.XXXXXX")
PIDS=()
OK=0
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$OK" != 1 ]; then
        for log in "$WORK"/chatsubo.log "$WORK"/prometheus.log; do
            [ -f "$log" ] && { echo "--- last lines of $log"; tail -n 30 "$log"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on (good enough: a clash is detected below).
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# 1. Chatsubo on a free loopback port, rooms of one peer, fresh data and logs.
#    (Readiness is read from /health, not from the log format.)
ADDR=
for attempt in 1 2 3; do
    port=$(free_port) || fail "no free loopback port"
    "$BIN" --listen "127.0.0.1:$port" --data-dir "$WORK/data" --log-dir "$WORK/logs" \
        --max-room-size 1 >"$WORK/chatsubo.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do
        if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
            # Still ours? (A server that lost the port race exits at once.)
            sleep 0.2
            kill -0 "$pid" 2>/dev/null && ADDR="127.0.0.1:$port"
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -n "$ADDR" ]; then
        PIDS+=("$pid")
        break
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
[ -n "$ADDR" ] || fail "chatsubo did not answer /health within 20 s"
say "chatsubo serving on $ADDR (pid $pid)"

# 2. Prometheus with the shipped rules, 1 s scrapes and evaluations.
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: chatsubo
    metrics_path: /metrics
    static_configs:
      - targets: ["$ADDR"]
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null || fail "generated prometheus.yml is invalid"

PROM=
for attempt in 1 2 3; do
    port=$(free_port) || fail "no free loopback port"
    prometheus --config.file="$WORK/prometheus.yml" \
        --storage.tsdb.path="$WORK/tsdb-$attempt" \
        --web.listen-address="127.0.0.1:$port" >"$WORK/prometheus.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
            PROM="127.0.0.1:$port"
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -n "$PROM" ]; then
        PIDS+=("$pid")
        break
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
[ -n "$PROM" ] || fail "prometheus did not become ready"
say "prometheus ready on $PROM"

# 3. Wait until Prometheus has scraped Chatsubo, so that the counter has a
#    sample from before the rejections.
up=
for _ in $(seq 300); do
    up=$(curl -fsS "http://$PROM/api/v1/query" --data-urlencode 'query=up{job="chatsubo"} == 1' 2>/dev/null || true)
    grep -q '"value":\[[0-9.]*,"1"\]' <<<"$up" && break
    up=
    sleep 0.1
done
[ -n "$up" ] || fail "prometheus never scraped chatsubo successfully"
sleep 1.5
say "prometheus scrapes chatsubo"

# 4. More than 5 room-full rejections a minute.
"$CLIENT" "ws://$ADDR/ws" e2e 20 || fail "the room_full client failed"
curl -fsS "http://$ADDR/metrics" | grep '^chatsubo_room_full_rejections_total'

# 5. Poll the alerts API until the alert is pending or firing.
state=
deadline=$((SECONDS + WAIT_SECS))
while [ "$SECONDS" -lt "$deadline" ]; do
    alerts=$(curl -fsS "http://$PROM/api/v1/alerts" 2>/dev/null || true)
    # One alert object per line, to read the state of ours.
    mine=$(sed 's/},{"labels"/}\n{"labels"/g' <<<"$alerts" | grep "\"alertname\":\"$ALERT\"" || true)
    state=$(grep -o '"state":"[a-z]*"' <<<"$mine" | head -n1 | cut -d'"' -f4 || true)
    if [ "$state" = pending ] || [ "$state" = firing ]; then
        break
    fi
    state=
    sleep 1
done

say "alerts seen by Prometheus:"
echo "${alerts:-<none>}"
rate=$(curl -fsS "http://$PROM/api/v1/query" \
    --data-urlencode 'query=increase(chatsubo_room_full_rejections_total[1m])' || true)
say "increase(chatsubo_room_full_rejections_total[1m]): $rate"
[ -n "$state" ] || fail "$ALERT was neither pending nor firing within ${WAIT_SECS} s"

# 6. Every rule evaluates without error on real data.
rules=$(curl -fsS "http://$PROM/api/v1/rules")
if grep -q '"health":"err"' <<<"$rules"; then
    echo "$rules"
    fail "a rule of alerts.yml fails to evaluate"
fi
say "all $(grep -o '"type":"alerting"' <<<"$rules" | wc -l) alert rules evaluate without error"

# 7. The real Prometheus accepts every query of the Grafana dashboard
#    (Grafana's variables replaced as Grafana would).
n=0
while IFS= read -r expr; do
    expr=${expr#\"expr\": \"}
    expr=${expr%\"}
    expr=${expr//\\\"/\"}
    expr=${expr//\$__rate_interval/1m}
    expr=${expr//\$instance/.*}
    answer=$(curl -sS "http://$PROM/api/v1/query" --data-urlencode "query=$expr")
    grep -q '"status":"success"' <<<"$answer" || fail "Prometheus refuses dashboard query: $expr: $answer"
    n=$((n + 1))
done < <(grep -oE '"expr": "(\\.|[^"\\])*"' "$ROOT/deploy/grafana/dashboards/chatsubo.json")
[ "$n" -gt 0 ] || fail "no query found in the dashboard"
say "Prometheus accepts all $n dashboard queries"
OK=1
say "PASS: $ALERT is $state"
