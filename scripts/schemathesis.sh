#!/usr/bin/env bash
# API fuzzing: schemathesis (from PyPI, its version pinned below) against
# docs/openapi.yaml and a real server on a free loopback port (no API token:
# loopback clients may read /api). Checks: no server error, responses
# conform to the spec's schemas, status codes and content types. Exits
# non-zero on any finding.
#
# SCHEMATHESIS_EXAMPLES sets the test cases per operation (default 100);
# the default run takes well under two minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

examples="${SCHEMATHESIS_EXAMPLES:-100}"
venv=target/venv
# An exact version, so that a new release cannot change what CI checks
# overnight; a venv holding another version is brought to this one.
version=4.32.5
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $version" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi
cargo build -q --bin chatsubo --example room_full

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
# --max-room-size 1: the seeding below leaves sessions both open and ended,
# with joins, room_full rejections and errors in their events.
target/debug/chatsubo --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --log-dir "$work/logs" --max-room-size 1 --log-level warn >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
target/debug/examples/room_full "ws://127.0.0.1:$port/ws" seeded 5 >/dev/null &
seeder=$!
sleep 2 # the seeder holds its first peer open; the store has the rest by now

started=$(date +%s)
status=0
"$venv/bin/schemathesis" run docs/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "$examples" \
  --seed 20261128 \
  --workers 2 \
  --request-timeout 10 \
  --generation-database none \
  --no-color \
  --warnings off || status=$?
kill "$seeder" 2>/dev/null || true
wait "$seeder" 2>/dev/null || true
echo "schemathesis: exit $status after $(($(date +%s) - started)) s ($examples examples per operation)"
if ! kill -0 "$server" 2>/dev/null; then
  echo "the server died during the run:" >&2
  cat "$work/server.log" >&2
  status=1
fi
exit "$status"
