#!/usr/bin/env bash
# Every check of the operations kit, in one run:
#   promtool check config / check rules / test rules   (Debian: prometheus)
#   amtool check-config, inhibition on a real Alertmanager (prometheus-alertmanager)
#   systemd-analyze verify on every unit in deploy/systemd (systemd)
#   scripts/prometheus-e2e.sh: real Chatsubo + real Prometheus (prometheus, curl)
# Builds nothing. Usage:
#   scripts/ops-checks.sh [CHATSUBO_BIN] [ROOM_FULL_CLIENT]
# defaults: target/debug/chatsubo and target/debug/examples/room_full
# (`cargo build --bin chatsubo --example room_full`; `cargo test` builds both).
# Exits non-zero on the first failing check, or at once if a tool is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath -m "${1:-$ROOT/target/debug/chatsubo}")
CLIENT=$(realpath -m "${2:-$(dirname "$BIN")/examples/room_full}")
cd "$ROOT"

missing=()
for tool in promtool prometheus amtool prometheus-alertmanager systemd-analyze curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "ops-checks: FAIL: missing tools: ${missing[*]}" >&2
    echo "ops-checks: install them with: apt-get install -y prometheus prometheus-alertmanager systemd curl" >&2
    exit 1
fi
[ -x "$BIN" ] || { echo "ops-checks: FAIL: no chatsubo binary at $BIN" >&2; exit 1; }
[ -x "$CLIENT" ] || { echo "ops-checks: FAIL: no room_full client at $CLIENT" >&2; exit 1; }

passed=0
step() {
    local name=$1
    shift
    echo "=== ops-checks: $name"
    if "$@"; then
        passed=$((passed + 1))
    else
        echo "ops-checks: FAIL: $name" >&2
        echo "ops-checks: $passed passed, 1 failed" >&2
        exit 1
    fi
}

# systemd-analyze verify refuses a unit whose ExecStart binary does not
# exist. The units name their installed paths (/usr/local/bin/...), which a
# build machine does not have, so each is verified as a copy whose ExecStart
# binary is replaced: chatsubo.service by the binary under test, the others
# by /bin/true. Everything else in the unit is verified as shipped.
verify_units() {
    local dir unit name exe
    dir=$(mktemp -d)
    for unit in deploy/systemd/*.service; do
        name=$(basename "$unit")
        exe=/bin/true
        [ "$name" = chatsubo.service ] && exe=$BIN
        sed -E "s#^ExecStart=[^ ]+#ExecStart=$exe#" "$unit" >"$dir/$name"
    done
    if ! (cd "$dir" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no ./*.service); then
        rm -rf "$dir"
        return 1
    fi
    echo "verified: $(ls "$dir" | tr '\n' ' ')"
    rm -rf "$dir"
}

step "promtool check config" promtool check config deploy/prometheus/prometheus.yml
step "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
step "promtool test rules" promtool test rules deploy/prometheus/tests/*.yml
step "amtool check-config" amtool check-config deploy/alertmanager/alertmanager.yml
step "alertmanager routing and inhibition" scripts/alertmanager-inhibit-check.sh
step "systemd-analyze verify" verify_units
step "prometheus end-to-end" scripts/prometheus-e2e.sh "$BIN" "$CLIENT"
echo "ops-checks: $passed passed, 0 failed"
