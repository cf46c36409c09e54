#!/usr/bin/env bash
# The whole test suite, as CI runs it. On a fresh Debian machine it first
# installs what the tests need (Debian packages) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n=== %s\n' "$*"; }

# --- set-up -----------------------------------------------------------------
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
# The edge tests run the shipped nginx configuration with a certificate
# openssl makes.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The TURN tests run a real coturn (turnserver) and its turnutils_uclient.
command -v turnserver >/dev/null 2>&1 || [ -x /usr/bin/turnserver ] || missing+=(coturn)
if ((${#missing[@]})); then
  section "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # The tests start their own Prometheus and coturn on free ports: keep the
  # packages' scripts from starting system services (policy-rc.d exit 101 =
  # "don't"; coturn's would take 3478).
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  $sudo rm -f "$policy"
  trap - EXIT
fi

# Install from the lock when a module the browser tests load is missing
# (node_modules from before peerjs was added lacks it).
if [ ! -d tests/e2e/node_modules/playwright-core ] || [ ! -d tests/e2e/node_modules/peerjs ]; then
  section "installing the browser tests' node modules"
  npm ci --prefix tests/e2e --no-audit --no-fund
fi

# --- disk -----------------------------------------------------------------------
# A clean run writes about 2 GB under target/, plus 0.6 GB for the matchbox
# client (target/matchbox-client). With less free space the linker dies of
# SIGBUS half-way through, which reads like a compiler bug: say so first.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${avail_kb:-0}" -lt $((3584 * 1024)) ]; then
  echo "test.sh: only $((avail_kb / 1024)) MB free on $(df -P . | awk 'NR==2 {print $6}'); the build needs about 3.5 GB" >&2
  exit 1
fi
# Incremental artefacts (about 1 GB) only help the next edit-compile cycle.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# --- Rust ---------------------------------------------------------------------
section "cargo fmt --check"
cargo fmt --all -- --check

section "scripts/check-layers.py (imports point down, no circle)"
python3 scripts/check-layers.py src

section "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

# The real matchbox client (tests/matchbox-client): a cargo package of its own,
# outside the workspace with its own lock file, so that the server's build does
# not pull in matchbox_socket and its WebRTC stack (about 260 crates). The root's
# fmt, clippy and test do not cover it. tests/api/adapters/matchbox_client.rs
# runs the binary it builds (target/matchbox-client/debug/matchbox-pair), so it
# comes before `cargo test`. Cold, clippy and build: 2 to 3 minutes on 2 cores
# (1m for each alone on an idle machine), 0.6 GB.
matchbox_client=(--locked --manifest-path tests/matchbox-client/Cargo.toml --target-dir target/matchbox-client)
section "tests/matchbox-client: cargo fmt --check, clippy, build"
cargo fmt --manifest-path tests/matchbox-client/Cargo.toml -- --check
cargo clippy "${matchbox_client[@]}" --all-targets -- -D warnings
cargo build "${matchbox_client[@]}"

section "cargo test"
cargo test --locked

# --- checks that need the built binary ------------------------------------------
bin=target/debug/chatsubo
for check in scripts/check-metrics.sh scripts/ops-checks.sh; do
  if [ -x "$check" ]; then
    section "$check"
    "$check" "$bin"
  fi
done

section "scripts/schemathesis.sh (API fuzzing against docs/openapi.yaml)"
scripts/schemathesis.sh

# --- the browser client ----------------------------------------------------------
section "browser tests (node --test, headless Chromium)"
node --test --test-concurrency=1 tests/e2e/

section "all tests passed"
