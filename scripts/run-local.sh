#!/usr/bin/env bash
# `make run`: the test origin on 127.0.0.1:8000 and the proxy on 8080 (admin 8081) with
# configs/proxy.dev.yaml, in the foreground. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG="${OPENFLARE_CONFIG:-configs/proxy.dev.yaml}"

$PY -m openflare check-config "$CONFIG" >/dev/null

$PY -m openflare_testsite --host 127.0.0.1 --port 8000 &
origin=$!
$PY -m openflare run --config "$CONFIG" &
proxy=$!

stop() {
  trap - INT TERM EXIT
  kill -TERM "$proxy" "$origin" 2>/dev/null || true
  wait "$proxy" "$origin" 2>/dev/null || true
}
trap stop INT TERM EXIT

ready=""
for _ in $(seq 1 150); do
  if $PY -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      http://127.0.0.1:8081/readyz >/dev/null 2>&1; then ready=1; break; fi
  if ! kill -0 "$proxy" 2>/dev/null || ! kill -0 "$origin" 2>/dev/null; then break; fi
  sleep 0.1
done
if [[ -z "$ready" ]]; then
  echo "make run: the proxy did not become ready on 127.0.0.1:8081 (see its output above)" >&2
  exit 1
fi
cat >&2 <<MSG

  OpenFlare is up:  proxy http://127.0.0.1:8080   admin http://127.0.0.1:8081   origin http://127.0.0.1:8000
  try:  curl -i http://127.0.0.1:8080/debug/echo
        curl -s http://127.0.0.1:8081/metrics | grep openflare_requests_total
  Ctrl-C stops both.

MSG
wait -n "$proxy" "$origin"
