#!/usr/bin/env bash
# Checks the routing and inhibit rules of deploy/alertmanager/alertmanager.yml
# on a real Alertmanager (Debian package prometheus-alertmanager) on
# loopback: alerts are posted to its API and amtool reads back which ones are
# active and which are suppressed. Nothing is e-mailed: the SMTP password
# file is a dummy and the deliveries fail quietly in the background.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "alertmanager-inhibit-check: FAIL: $*" >&2; exit 1; }
say() { echo "alertmanager-inhibit-check: $*"; }

for tool in prometheus-alertmanager amtool curl; do
    command -v "$tool" >/dev/null || fail "'$tool' not found (apt-get install -y prometheus-alertmanager curl)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chatsubo-am.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The shipped config, with the password file pointed at a dummy.
echo "not-a-real-password" >"$WORK/smtp_password"
sed "s#/etc/alertmanager/smtp_password#$WORK/smtp_password#" \
    "$ROOT/deploy/alertmanager/alertmanager.yml" >"$WORK/alertmanager.yml"

# Routing: critical and warning alerts both reach the e-mail receiver.
for severity in critical warning; do
    got=$(amtool config routes test --config.file="$WORK/alertmanager.yml" \
        alertname=ChatsuboDown severity=$severity 2>/dev/null)
    [ "$got" = ops-email ] || fail "severity=$severity routes to '$got', not ops-email"
done

URL=
for _ in 1 2 3; do
    port=$((20000 + RANDOM % 40000))
    prometheus-alertmanager --config.file="$WORK/alertmanager.yml" \
        --storage.path="$WORK/data" --web.listen-address="127.0.0.1:$port" \
        --cluster.listen-address= >"$WORK/alertmanager.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && { URL="http://127.0.0.1:$port"; break; }
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$URL" ] && break
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
done
[ -n "$URL" ] || { tail -n 20 "$WORK/alertmanager.log" >&2; fail "alertmanager did not start"; }
say "alertmanager ready at $URL"

alert() { # alertname severity job instance
    local inst=""
    [ -n "$4" ] && inst=",\"instance\":\"$4\""
    printf '{"labels":{"alertname":"%s","severity":"%s","job":"%s"%s}}' "$1" "$2" "$3" "$inst"
}
post() { curl -fsS -XPOST -H 'Content-Type: application/json' "$URL/api/v2/alerts" -d "[$1]" >/dev/null; }
# Alertnames (with @instance) that amtool lists with the given flags.
expect() { # what state expected-list amtool-flags
    local got
    got=$(amtool --alertmanager.url="$URL" alert query -o json "${@:4}" |
        grep -o '"labels":{[^}]*}' | sed -E 's/.*"alertname":"([^"]*)".*"instance":"([^"]*)".*/\1@\2/; s/.*"alertname":"([^"]*)".*/\1/' | sort | tr '\n' ' ')
    [ "$got" = "$3" ] || fail "$1: expected $2 [$3], got [$got]"
    say "ok: $1 ($2: $got)"
}

# Case 1: the critical twin silences the warning on the same instance only.
post "$(alert ChatsuboConnectionsHigh warning chatsubo a:8080),$(alert ChatsuboConnectionsCritical critical chatsubo a:8080),$(alert ChatsuboConnectionsHigh warning chatsubo b:8080)"
sleep 1
expect "critical silences its warning twin" "active" \
    "ChatsuboConnectionsCritical@a:8080 ChatsuboConnectionsHigh@b:8080 " --active
expect "critical silences its warning twin" "inhibited" \
    "ChatsuboConnectionsHigh@a:8080 " --inhibited

# Case 2: ChatsuboDown on one instance silences the rest of that instance.
post "$(alert ChatsuboDown critical chatsubo b:8080),$(alert ChatsuboRoomsHigh warning chatsubo b:8080)"
sleep 1
expect "down silences its instance" "inhibited" \
    "ChatsuboConnectionsHigh@a:8080 ChatsuboConnectionsHigh@b:8080 ChatsuboRoomsHigh@b:8080 " --inhibited

# Case 3: ChatsuboDown without instance (target vanished) silences the job.
post "$(alert ChatsuboDown critical chatsubo '')"
sleep 1
expect "down without instance silences the job" "active" \
    "ChatsuboDown ChatsuboDown@b:8080 " --active
say "PASS"
