#!/usr/bin/env bash
# Runs a real coturn (Debian package coturn) on 127.0.0.1:PORT, in the
# foreground until it is killed: TURN REST API credentials
# (use-auth-secret) with the shared secret read from SECRET_FILE, the file
# Chatsubo reads with --turn-secret-file; relay ports MINPORT to MAXPORT on
# 127.0.0.1; no TLS. Its configuration is written to DIR/turnserver.conf,
# its log to DIR/turnserver.log and anything else it prints to
# DIR/turnserver.out. Used by tests/api/turn.rs and the browser tests
# (tests/e2e/turn.test.mjs).
#
# usage: tests/coturn/run.sh DIR PORT SECRET_FILE MINPORT MAXPORT
set -euo pipefail
dir=$1 port=$2 secret_file=$3 min=$4 max=$5
turnserver=$(command -v turnserver || echo /usr/bin/turnserver)
if [ ! -x "$turnserver" ]; then
  echo "run.sh: turnserver not found: install the Debian package coturn (scripts/test.sh does)" >&2
  exit 1
fi
mkdir -p "$dir"
secret=$(tr -d '[:space:]' <"$secret_file")
[ -n "$secret" ] || { echo "run.sh: $secret_file is empty" >&2; exit 1; }

# The file holds the secret: readable by this user only.
umask 077
cat >"$dir/turnserver.conf" <<CONF
listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port=$port
min-port=$min
max-port=$max
use-auth-secret
static-auth-secret=$secret
realm=chatsubo.test
no-tls
no-dtls
no-cli
# Both ends are on 127.0.0.1; coturn refuses to relay to loopback otherwise.
allow-loopback-peers
log-file=$dir/turnserver.log
simple-log
pidfile=$dir/turnserver.pid
userdb=$dir/turndb
CONF
exec "$turnserver" -c "$dir/turnserver.conf" >>"$dir/turnserver.out" 2>&1
