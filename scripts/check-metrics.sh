#!/usr/bin/env bash
# Starts chatsubo on a free port, drives one join, scrapes /metrics and pipes
# the exposition through `promtool check metrics`. Exits non-zero when the
# server does not start, the scrape fails, or promtool finds a problem.
#
#   scripts/check-metrics.sh                 # builds target/debug/chatsubo first
#   scripts/check-metrics.sh path/to/chatsubo  # or CHATSUBO_BIN=path/to/chatsubo
#
# promtool comes with the Debian package `prometheus`.
set -euo pipefail

cd "$(dirname "$0")/.."
command -v promtool >/dev/null || { echo "check-metrics: promtool not found (apt-get install prometheus)" >&2; exit 2; }
command -v curl >/dev/null || { echo "check-metrics: curl not found" >&2; exit 2; }

bin="${1:-${CHATSUBO_BIN:-}}"
if [ -z "$bin" ]; then
    cargo build --quiet --bin chatsubo
    bin=target/debug/chatsubo
fi

work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Port 0: the kernel picks a free port; the server logs the one it got.
env -u OTEL_EXPORTER_OTLP_ENDPOINT "$bin" --listen 127.0.0.1:0 \
    --data-dir "$work/data" --log-dir "$work/logs" >"$work/stdout" 2>"$work/stderr" &
pid=$!

addr=""
for _ in $(seq 1 100); do
    addr="$(sed -n 's/.*"event":"listening".*"address":"\([^"]*\)".*/\1/p' "$work/stdout" | head -n1)"
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "check-metrics: chatsubo exited:" >&2; cat "$work/stderr" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "check-metrics: chatsubo did not start" >&2; exit 1; }

# One WebSocket join (via ?room=), so that histograms hold a sample too.
curl -s -m 1 -o /dev/null \
    -H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Version: 13" \
    -H "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" "http://$addr/ws?room=check" || true

curl -sf "http://$addr/metrics" >"$work/metrics"
families="$(grep -c '^# TYPE ' "$work/metrics" || true)"
if ! promtool check metrics <"$work/metrics"; then
    echo "check-metrics: promtool found problems in /metrics" >&2
    exit 1
fi
echo "check-metrics: /metrics passes promtool check metrics ($families families)"
