#!/usr/bin/env bash
# Part of `make kind-e2e`, after the chart is installed and rolled out: forwards the proxy, its
# admin port and the test origin to loopback, runs the E2E suite with --target kind, then the
# live-reload test (kubernetes Python client: its own port-forward and a ConfigMap patch) and
# `helm test`. Stops its port-forwards by PID.
set -euo pipefail
cd "$(dirname "$0")/../../.."
NAMESPACE=${KIND_NAMESPACE:-openflare}
RELEASE=${KIND_RELEASE:-of}
FULL="$RELEASE-openflare"
PY=${PY:-.venv/bin/python}
TOOLS_PY=.tools/venv/bin/python
HELM=.tools/bin/helm

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

forward() {  # forward SERVICE LOCAL:REMOTE
  kubectl -n "$NAMESPACE" port-forward "service/$1" "$2" --address 127.0.0.1 >/dev/null 2>&1 &
  pids+=($!)
}
forward "$FULL" 18080:80
forward "$FULL-admin" 18081:8081
forward "$FULL-origin" 18000:8000
for _ in $(seq 1 60); do
  curl -fsS http://127.0.0.1:18081/readyz >/dev/null 2>&1 && curl -fsS http://127.0.0.1:18000/healthz >/dev/null 2>&1 && break
  sleep 1
done

token=$(kubectl -n "$NAMESPACE" get secret "$FULL-admin" -o jsonpath='{.data.admin-token}' | base64 -d)
export E2E_PROXY_URL=http://127.0.0.1:18080 E2E_ADMIN_URL=http://127.0.0.1:18081
export E2E_ORIGIN_URL=http://127.0.0.1:18000 E2E_ADMIN_TOKEN="$token"
(cd e2e && "../$PY" -m pytest -q --target kind)

"$TOOLS_PY" -m pip install --quiet --disable-pip-version-check "kubernetes>=31"
KIND_E2E=1 OPENFLARE_NAMESPACE="$NAMESPACE" OPENFLARE_RELEASE="$RELEASE" \
  "$TOOLS_PY" -m pytest -q -p no:cacheprovider -s charts/tests/kind

"$HELM" test "$RELEASE" -n "$NAMESPACE" --logs
