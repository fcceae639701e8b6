#!/usr/bin/env bash
# `make smoke`: a curl-level sanity check against a running stack (make run, compose or a
# port-forwarded cluster). Exits non-zero on the first failed check.
set -uo pipefail
PROXY="${PROXY_URL:-http://127.0.0.1:8080}"
ADMIN="${ADMIN_URL:-http://127.0.0.1:8081}"
TOKEN="${OPENFLARE_ADMIN_TOKEN:-openflare-dev-token}"
failures=0

check() {  # check NAME EXPECTED_STATUS CURL_ARGS...
  local name=$1 expected=$2; shift 2
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@")
  if [[ "$status" == "$expected" ]]; then
    printf 'ok    %-40s %s\n' "$name" "$status"
  else
    printf 'FAIL  %-40s got %s, want %s\n' "$name" "$status" "$expected"; failures=$((failures + 1))
  fi
}

check "proxied /debug/echo" 200 "$PROXY/debug/echo"
check "request id echoed" 200 -H 'X-Request-ID: smoke-1' "$PROXY/debug/echo"
if curl -s -D - -o /dev/null -H 'X-Request-ID: smoke-1' "$PROXY/debug/echo" | grep -qi '^x-request-id: smoke-1'; then
  echo "ok    X-Request-ID kept"; else echo "FAIL  X-Request-ID kept"; failures=$((failures + 1)); fi
check "encoded slash refused" 400 --path-as-is "$PROXY/a%2Fb"
check "origin error passed through" 503 "$PROXY/error/503"
check "healthz" 200 "$ADMIN/healthz"
check "readyz" 200 "$ADMIN/readyz"
check "metrics" 200 "$ADMIN/metrics"
check "admin without token" 401 "$ADMIN/admin/config"
check "admin with token" 200 -H "Authorization: Bearer $TOKEN" "$ADMIN/admin/config"

if [[ $failures -gt 0 ]]; then echo "smoke: $failures check(s) failed"; exit 1; fi
echo "smoke: all checks passed"
