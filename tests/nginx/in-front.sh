#!/usr/bin/env bash
# Runs a real nginx with the shipped deploy/nginx/chatsubo.conf in front of
# a Chatsubo on 127.0.0.1:UPSTREAM, in the foreground until it is killed:
# TLS on 127.0.0.1:TLS with a certificate made here for chat.example.org,
# localhost and 127.0.0.1 (signed by a throw-away CA: DIR/ca.pem is what a
# client trusts), the redirect on 127.0.0.1:HTTP. Used by tests/api/edge/nginx.rs and the browser tests.
#
# usage: tests/nginx/in-front.sh DIR UPSTREAM TLS HTTP
set -euo pipefail
dir=$1 upstream=$2 tls=$3 http=$4
root=$(cd "$(dirname "$0")/../.." && pwd)
shipped=$root/deploy/nginx/chatsubo.conf
nginx=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p "$dir"

ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=chatsubo test CA" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj "/CN=chat.example.org" -keyout "$dir/key.pem" -out "$dir/leaf.csr" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:chat.example.org,DNS:localhost,IP:127.0.0.1" \
  "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" > "$dir/leaf.ext"
openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 2 -extfile "$dir/leaf.ext" -out "$dir/cert.pem" 2>/dev/null

# The shipped server blocks, with this run's ports and certificate: every
# line changed here must be there, or the test would not test the file.
sed -e "s#server 127.0.0.1:8080;#server 127.0.0.1:$upstream;#" \
    -e "s#listen 443 ssl;#listen 127.0.0.1:$tls ssl;#" \
    -e "s#listen 80;#listen 127.0.0.1:$http;#" \
    -e "/listen \[::\]:/d" \
    -e "s#/etc/letsencrypt/live/chat.example.org/fullchain.pem#$dir/cert.pem#" \
    -e "s#/etc/letsencrypt/live/chat.example.org/privkey.pem#$dir/key.pem#" \
    "$shipped" > "$dir/chatsubo.conf"
for line in "server 127.0.0.1:$upstream;" "listen 127.0.0.1:$tls ssl;" "listen 127.0.0.1:$http;" \
            "ssl_certificate     $dir/cert.pem;" "ssl_certificate_key $dir/key.pem;"; do
  grep -qF "$line" "$dir/chatsubo.conf" || { echo "in-front.sh: $shipped no longer has the line for: $line" >&2; exit 1; }
done

# What a distribution's nginx.conf would give, in this run's directory.
user=""
[ "$(id -u)" -eq 0 ] && user="user root;"
cat > "$dir/nginx.conf" <<CONF
$user
master_process off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/chatsubo.conf;
}
CONF
exec "$nginx" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -g "daemon off;"
