#!/usr/bin/env bash
# Builds both images and runs them the way the Helm chart does, on a machine where nothing can be
# pulled: `make image-test`.
#
#  1. starts Debian's docker.io engine privately (vfs storage, --iptables=false --bridge=none,
#     its own data root, exec root, pid file and socket), so it touches no other engine;
#  2. makes the base image: `debootstrap --variant=minbase` bookworm with python3, python3-venv
#     and ca-certificates from Debian's archive, `docker import`ed (the root filesystem tarball
#     is cached in .tools/image-cache, so later runs skip debootstrap);
#  3. builds proxy/Dockerfile and testsite/Dockerfile FROM it (BASE_IMAGE build argument) with
#     the legacy builder (DOCKER_BUILDKIT=0), `--network host` for pip;
#  4. runs both with the chart's settings: --read-only, --cap-drop ALL, no-new-privileges, user
#     65532, a tmpfs /tmp, the config mounted read-only as folders; host network on loopback;
#  5. checks /healthz and /readyz, a proxied request, a WAF block, the user and capabilities,
#     that the root filesystem is read-only, a live rule change picked up by the directory
#     watcher (OPENFLARE_WATCH=dir), and a clean SIGTERM drain (exit code 0);
#  6. stops the engine by its PID (and the containerd it started), whatever happened.
#
# Needs root (the engine) and the Debian packages docker.io and debootstrap (installed when
# missing). Environment: OPENFLARE_DOCKER_DIR (default /var/tmp/openflare-docker: the engine's
# data, kept between runs as a layer cache), KEEP_ENGINE=1 leaves the engine running for
# debugging (prints how to reach and stop it). IMAGE_TEST_ENGINE=host uses the machine's own
# running docker engine instead (CI runners that can pull): no private engine, no debootstrap,
# BASE_IMAGE (default python:3.11-slim-bookworm) as the base, the same checks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3,python3-venv,ca-certificates
WORK=${OPENFLARE_DOCKER_DIR:-/var/tmp/openflare-docker}
EXEC_ROOT=/run/openflare-docker          # short: containerd's socket paths live under it
SOCK=/run/openflare-docker.sock
CACHE="$ROOT/.tools/image-cache"
BASE_TAG=openflare-base:$SUITE
PROXY_TAG=openflare-proxy:image-test
ORIGIN_TAG=openflare-testsite:image-test
ENGINE=${IMAGE_TEST_ENGINE:-private}
[[ "$ENGINE" == private || "$ENGINE" == host ]] || { echo "IMAGE_TEST_ENGINE: private or host" >&2; exit 2; }
if [[ "$ENGINE" == host ]]; then
  DOCKER=$(command -v docker)
  BASE_TAG=${BASE_IMAGE:-python:3.11-slim-bookworm}
  BUILD_NETWORK=()
else
  DOCKER=/usr/bin/docker                 # the docker.io client (another may be on PATH)
  export DOCKER_HOST="unix://$SOCK" DOCKER_BUILDKIT=0
  BUILD_NETWORK=(--network host)         # --bridge=none: builds use the host's network
fi

started=$(date +%s)
step() { echo "image-test [$(($(date +%s) - started))s] $*"; }
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }

if [[ "$ENGINE" == private ]]; then
[[ $(id -u) -eq 0 ]] || fail "must run as root (it starts a docker engine)"
missing=()
[[ -x /usr/sbin/dockerd && -x $DOCKER ]] || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$WORK/data" "$CACHE"
exec 9>"$WORK/lock"
flock -n 9 || fail "another image test is running (lock $WORK/lock)"
fi

# --- the engine ----------------------------------------------------------------------------------
DOCKERD_PID=""
CONTAINERS=(of-image-test-proxy of-image-test-origin)
stop_engine() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ "$ENGINE" == host ]]; then
    if [[ $rc -ne 0 ]]; then
      for c in "${CONTAINERS[@]}"; do $DOCKER logs --tail 40 "$c" 2>&1 || true; done
    fi
    $DOCKER rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
    exit "$rc"
  fi
  if [[ -n "$DOCKERD_PID" ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    if [[ $rc -ne 0 ]]; then
      for c in "${CONTAINERS[@]}"; do
        echo "----- docker logs $c (last 40 lines)"; $DOCKER logs --tail 40 "$c" 2>&1 || true
      done
      echo "----- dockerd log (last 20 lines)"; tail -n 20 "$WORK/dockerd.log" || true
    fi
    if [[ "${KEEP_ENGINE:-0}" == 1 ]]; then
      echo "image-test: engine left running: DOCKER_HOST=$DOCKER_HOST; stop: kill $DOCKERD_PID"
      exit "$rc"
    fi
    $DOCKER rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
    local containerd_pid=""
    [[ -f "$EXEC_ROOT/containerd/containerd.pid" ]] && containerd_pid=$(cat "$EXEC_ROOT/containerd/containerd.pid")
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then kill -KILL "$DOCKERD_PID" 2>/dev/null || true; fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    if [[ -n "$containerd_pid" ]] && kill -0 "$containerd_pid" 2>/dev/null; then
      kill -TERM "$containerd_pid" 2>/dev/null || true
    fi
    step "engine stopped (pid $DOCKERD_PID)"
  fi
  exit "$rc"
}
trap stop_engine EXIT
trap 'exit 130' INT TERM

if [[ "$ENGINE" == private ]]; then
if [[ -S "$SOCK" ]] && $DOCKER version >/dev/null 2>&1; then
  fail "an engine already answers on $SOCK (KEEP_ENGINE left over?); stop it first"
fi
rm -f "$SOCK"
step "starting dockerd (vfs, no iptables, no bridge) on $SOCK"
/usr/sbin/dockerd \
  --storage-driver=vfs --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
  --data-root "$WORK/data" --exec-root "$EXEC_ROOT" --pidfile "$WORK/dockerd.pid" \
  --host "unix://$SOCK" >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 120); do
  $DOCKER version >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 30 "$WORK/dockerd.log" >&2; fail "dockerd exited"; }
  sleep 0.5
done
$DOCKER version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})' || fail "dockerd did not answer"

# --- the base image --------------------------------------------------------------------------------
base_key=$(printf 'v2 %s %s %s' "$SUITE" "$BASE_PACKAGES" "$(sha256sum /etc/ssl/certs/ca-certificates.crt | cut -c1-12)" | sha256sum | cut -c1-12)
tarball="$CACHE/base-$SUITE-$base_key.tar.gz"
if ! $DOCKER image inspect "$BASE_TAG" >/dev/null 2>&1 || \
   [[ "$($DOCKER image inspect -f '{{index .Config.Labels "openflare.base-key"}}' "$BASE_TAG" 2>/dev/null)" != "$base_key" ]]; then
  if [[ ! -f "$tarball" ]]; then
    rootfs=$(mktemp -d /var/tmp/openflare-rootfs.XXXXXX)
    chmod 0755 "$rootfs"  # mktemp's 0700 would become the image's `/`: uid 65532 could exec nothing
    step "debootstrap --variant=minbase $SUITE ($BASE_PACKAGES); a few minutes the first time"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$DEBIAN_MIRROR" \
      >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
    # The host's CA bundle, so pip inside `docker build` trusts what the host trusts.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    tar -C "$rootfs" --numeric-owner -cf - . | gzip -1 >"$tarball.part"
    mv "$tarball.part" "$tarball"
    rm -rf "$rootfs"
  fi
  step "docker import $(basename "$tarball") as $BASE_TAG"
  $DOCKER import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL openflare.base-key=$base_key" \
    --change 'CMD ["python3"]' \
    "$tarball" "$BASE_TAG" >/dev/null
fi
fi  # private engine

# --- the images ------------------------------------------------------------------------------------
for spec in "proxy/Dockerfile:$PROXY_TAG" "testsite/Dockerfile:$ORIGIN_TAG"; do
  file=${spec%%:*} tag=${spec#*:}
  step "docker build -f $file -t $tag (BASE_IMAGE=$BASE_TAG${DOCKER_BUILDKIT:+, DOCKER_BUILDKIT=$DOCKER_BUILDKIT})"
  $DOCKER build --quiet "${BUILD_NETWORK[@]}" --build-arg "BASE_IMAGE=$BASE_TAG" -f "$file" -t "$tag" . \
    >"$WORK/build-$(basename "$(dirname "$file")").log" 2>&1 \
    || { tail -n 40 "$WORK/build-$(basename "$(dirname "$file")").log" >&2; fail "build $file"; }
done
for tag in "$PROXY_TAG" "$ORIGIN_TAG"; do
  user=$($DOCKER image inspect -f '{{.Config.User}}' "$tag")
  [[ "$user" == "65532:65532" ]] || fail "$tag runs as '$user', not 65532:65532"
done
$DOCKER image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'openflare-(proxy|testsite|base)' || true

# --- run them like the chart does -----------------------------------------------------------------
read -r PROXY_PORT ADMIN_PORT ORIGIN_PORT < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
RUN_DIR=$(mktemp -d /tmp/openflare-image-test.XXXXXX)
chmod 755 "$RUN_DIR"
mkdir -p "$RUN_DIR"/{config,waf,cache,rate-limit}
cat >"$RUN_DIR/config/proxy.yaml" <<YAML
server:
  listen_addr: "127.0.0.1:$PROXY_PORT"
  admin_listen_addr: "127.0.0.1:$ADMIN_PORT"
  shutdown_delay_ms: 200
  graceful_shutdown_timeout_ms: 5000
upstreams:
  - name: origin
    base_url: "http://127.0.0.1:$ORIGIN_PORT"
routing:
  default_upstream: origin
rule_files:
  waf: ../waf/rules.waf.yaml
  cache: ../cache/cache-rules.yaml
  rate_limit: ../rate-limit/rate-limit.yaml
YAML
cp configs/rules.waf.yaml "$RUN_DIR/waf/"
cp configs/cache-rules.yaml "$RUN_DIR/cache/"
cp configs/rate-limit.yaml "$RUN_DIR/rate-limit/"
chmod -R a+rX "$RUN_DIR"
HARDENED=(--network host --read-only --cap-drop ALL --security-opt no-new-privileges
          --user 65532:65532 --tmpfs /tmp:rw,nosuid,nodev,size=64m)

step "running the origin on 127.0.0.1:$ORIGIN_PORT and the proxy on :$PROXY_PORT (admin :$ADMIN_PORT)"
$DOCKER rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
$DOCKER run -d --name of-image-test-origin "${HARDENED[@]}" "$ORIGIN_TAG" \
  --host 127.0.0.1 --port "$ORIGIN_PORT" >/dev/null
$DOCKER run -d --name of-image-test-proxy "${HARDENED[@]}" \
  -v "$RUN_DIR:/etc/openflare:ro" \
  -e OPENFLARE_ADMIN_TOKEN="$TOKEN" -e OPENFLARE_WATCH=dir \
  -e OPENFLARE_WATCH_INTERVAL_MS=200 -e OPENFLARE_WATCH_DEBOUNCE_MS=200 \
  "$PROXY_TAG" >/dev/null

http() { curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$@" 2>/dev/null || true; }
wait_for() {  # wait_for SECONDS EXPECTED_CODE URL [curl args]; gives up when a container exits
  local deadline=$(($(date +%s) + $1)) want=$2 code="" c; shift 2
  while (($(date +%s) < deadline)); do
    code=$(http "$@")
    [[ "$code" == "$want" ]] && return 0
    for c in "${CONTAINERS[@]}"; do
      if [[ "$($DOCKER inspect -f '{{.State.Running}}' "$c" 2>/dev/null)" == false ]]; then
        echo "image-test: container $c exited" >&2
        return 1
      fi
    done
    sleep 0.2
  done
  echo "image-test: $* answered ${code:-nothing}, wanted $want" >&2
  return 1
}

wait_for 30 200 "http://127.0.0.1:$ORIGIN_PORT/" || fail "the origin did not come up"
wait_for 60 200 "http://127.0.0.1:$ADMIN_PORT/readyz" || fail "/readyz never answered 200"
[[ $(http "http://127.0.0.1:$ADMIN_PORT/healthz") == 200 ]] || fail "/healthz"
step "/readyz 200, /healthz 200"

headers=$(curl -sS -D - -o /dev/null --max-time 5 "http://127.0.0.1:$PROXY_PORT/")
grep -q '^HTTP/1.1 200' <<<"$headers" || fail "proxied GET / did not answer 200: $headers"
grep -qi '^x-request-id:' <<<"$headers" || fail "proxied GET / has no X-Request-ID: $headers"
[[ $(http "http://127.0.0.1:$PROXY_PORT/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--") == 403 ]] \
  || fail "the WAF did not block a UNION SELECT through the container"
step "proxied GET / 200 with X-Request-ID; WAF 403 on SQL injection"

uid=$($DOCKER exec of-image-test-proxy python3 -c 'import os; print(os.getuid(), os.getgid())')
[[ "$uid" == "65532 65532" ]] || fail "proxy runs as '$uid'"
capeff=$($DOCKER exec of-image-test-proxy python3 -c \
  'print([l.split()[1] for l in open("/proc/1/status") if l.startswith("CapEff")][0])')
[[ "$capeff" == 0000000000000000 ]] || fail "proxy has capabilities $capeff"
if $DOCKER exec of-image-test-proxy python3 -c 'open("/opt/openflare/x", "w")' 2>/dev/null; then
  fail "the root filesystem is writable"
fi
$DOCKER exec of-image-test-proxy python3 -c 'open("/tmp/x", "w").write("ok")' || fail "/tmp not writable"
step "uid/gid 65532, no capabilities, read-only root, writable /tmp"

# A live rule change through the mounted folder (the directory watcher, as with a ConfigMap).
new_rules="$RUN_DIR/waf/.rules.new"
cp "$RUN_DIR/waf/rules.waf.yaml" "$new_rules"
cat >>"$new_rules" <<'YAML'
  - id: image-test-live-rule
    description: "added while the container runs"
    match:
      any:
        - target: [raw_path]
          regex: 'blocked-by-live-reload'
    action: {type: block}
YAML
chmod a+r "$new_rules"
[[ $(http "http://127.0.0.1:$PROXY_PORT/blocked-by-live-reload") != 403 ]] || fail "blocked before the change"
mv "$new_rules" "$RUN_DIR/waf/rules.waf.yaml"
wait_for 15 403 "http://127.0.0.1:$PROXY_PORT/blocked-by-live-reload" || fail "the rule change was not applied"
curl -sS --max-time 5 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN_PORT/admin/config" \
  | python3 -c 'import json,sys; h=json.load(sys.stdin)["history"]; assert h and h[-1]["source"]=="file_watch" and h[-1]["result"]=="ok", h' \
  || fail "/admin/config does not show the file_watch reload"
step "rule change in the mounted folder applied by the directory watcher (no restart)"

$DOCKER stop --time 20 of-image-test-proxy >/dev/null
code=$($DOCKER inspect -f '{{.State.ExitCode}}' of-image-test-proxy)
[[ "$code" == 0 ]] || fail "proxy exited with $code after SIGTERM"
$DOCKER logs of-image-test-proxy 2>&1 | grep -q '"event":"stopped"' || fail "no 'stopped' log line after SIGTERM"
$DOCKER stop --time 10 of-image-test-origin >/dev/null
step "SIGTERM: proxy drained and exited 0"
rm -rf "$RUN_DIR"
step "ok: both images build FROM the local base and run hardened"
