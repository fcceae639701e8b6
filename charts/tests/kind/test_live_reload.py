"""In a real cluster (`make kind-e2e`, KIND_E2E=1): patch the WAF ConfigMap with the Kubernetes
API and see every proxy pod apply the new rule, with no pod restarted; rotate the admin token
Secret (mounted as a folder, OPENFLARE_ADMIN_TOKEN_FILE) and see every pod apply it by itself
(the watcher's `secret_watch` reload; no reload sent, no restart).

Talks to the cluster with the `kubernetes` Python client only: it port-forwards to each pod
itself (no kubectl) and patches the ConfigMap. Environment: KIND_E2E=1, OPENFLARE_NAMESPACE
(default openflare), OPENFLARE_RELEASE (default of), KIND_E2E_RELOAD_TIMEOUT (seconds; default
150: the kubelet's sync period plus its ConfigMap cache TTL, for reload.mode=dir).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

if os.environ.get("KIND_E2E") != "1":
    pytest.skip("needs a cluster: make kind-e2e (KIND_E2E=1)", allow_module_level=True)

from kubernetes import client, config
from kubernetes.stream import portforward

NAMESPACE = os.environ.get("OPENFLARE_NAMESPACE", "openflare")
RELEASE = os.environ.get("OPENFLARE_RELEASE", "of")
FULL = f"{RELEASE}-openflare"
TIMEOUT = float(os.environ.get("KIND_E2E_RELOAD_TIMEOUT", "150"))
PROBE_PATH = "/kind-live-reload-probe"
RULE = f"""
  - id: kind-live-reload
    description: "added by charts/tests/kind/test_live_reload.py"
    match:
      any:
        - target: [raw_path]
          regex: '{PROBE_PATH}'
    action: {{type: block}}
"""


@pytest.fixture(scope="module")
def core() -> client.CoreV1Api:
    config.load_kube_config()
    return client.CoreV1Api()


def http_get(
    core: client.CoreV1Api, pod: str, port: int, path: str, token: str = "", method: str = "GET"
) -> tuple[int, bytes]:
    """GET (or `method`, without a body) through the API server's port-forward to one pod
    (HTTP/1.0, whole body)."""
    forward = portforward(
        core.connect_get_namespaced_pod_portforward, pod, NAMESPACE, ports=str(port)
    )
    sock = forward.socket(port)
    sock.settimeout(10)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n{auth}\r\n"
    sock.sendall(head.encode())
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    forward.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def proxy_pods(core: client.CoreV1Api) -> list[Any]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=proxy"
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    assert running, f"no running proxy pods ({selector}) in {NAMESPACE}"
    return running


def restarts(pod: Any) -> int:
    return sum(status.restart_count for status in pod.status.container_statuses or [])


@pytest.fixture
def waf_configmap(core: client.CoreV1Api) -> Iterator[dict[str, str]]:
    name = f"{FULL}-waf"
    original = core.read_namespaced_config_map(name, NAMESPACE).data
    yield original
    core.patch_namespaced_config_map(name, NAMESPACE, {"data": original})


def admin_token(core: client.CoreV1Api) -> str:
    import base64

    secret = core.read_namespaced_secret(f"{FULL}-admin", NAMESPACE)
    return base64.b64decode(secret.data["admin-token"]).decode()


def test_configmap_edit_applies_without_restart(
    core: client.CoreV1Api, waf_configmap: dict[str, str]
) -> None:
    before = {p.metadata.name: (p.metadata.uid, restarts(p)) for p in proxy_pods(core)}
    for pod in before:
        status, _ = http_get(core, pod, 8080, PROBE_PATH)
        assert status != 403, f"{pod} blocks {PROBE_PATH} before the edit"

    key = "rules.waf.yaml"
    patched = waf_configmap[key].rstrip("\n") + "\n" + RULE
    core.patch_namespaced_config_map(f"{FULL}-waf", NAMESPACE, {"data": {key: patched}})
    started = time.monotonic()

    pending = set(before)
    while pending and time.monotonic() - started < TIMEOUT:
        for pod in sorted(pending):
            status, _ = http_get(core, pod, 8080, PROBE_PATH)
            if status == 403:
                pending.discard(pod)
                print(f"{pod}: rule applied after {time.monotonic() - started:.1f}s")
        time.sleep(1)
    assert not pending, f"{sorted(pending)} did not apply the edit within {TIMEOUT}s"

    after = {p.metadata.name: (p.metadata.uid, restarts(p)) for p in proxy_pods(core)}
    assert after == before, "a pod was replaced or restarted"
    token = admin_token(core)
    for pod in before:
        status, body = http_get(core, pod, 8081, "/admin/config", token)
        assert status == 200
        last = json.loads(body)["history"][-1]
        assert last["result"] == "ok" and last["source"] in {"file_watch", "k8s_watch"}


def wait_until_accepted(
    core: client.CoreV1Api, pods: list[str], old: str, new: str, since: float
) -> None:
    """After a change of the token Secret: wait, sending no reload, until each pod accepts `new`
    (the kubelet updates the mounted file, the proxy's watcher notices it and reloads with
    source `secret_watch`). Then `old` is refused everywhere."""
    started = time.monotonic()
    pending = set(pods)
    while pending and time.monotonic() - started < TIMEOUT:
        for pod in sorted(pending):
            status, body = http_get(core, pod, 8081, "/admin/config", new)
            if status == 200:
                pending.discard(pod)
                print(f"{pod}: new admin token applied after {time.monotonic() - started:.1f}s")
                history = json.loads(body)["history"]
                # ok, or unchanged right after a file_watch reload that read the new file first
                assert any(
                    item["source"] == "secret_watch" and item["at"] >= since for item in history
                ), f"{pod}: no secret_watch reload since the patch: {history[-3:]}"
        time.sleep(2)
    assert not pending, f"{sorted(pending)} did not take the rotated token within {TIMEOUT}s"
    for pod in pods:
        status, _ = http_get(core, pod, 8081, "/admin/config", old)
        assert status == 401, f"{pod} still accepts the old token"


def test_rotated_token_secret_applies_without_restart_or_reload(core: client.CoreV1Api) -> None:
    name = f"{FULL}-admin"
    original = admin_token(core)
    before = {p.metadata.name: (p.metadata.uid, restarts(p)) for p in proxy_pods(core)}
    rotated = "kind-rotated-" + secrets.token_hex(16)
    since = time.time() - 5  # `at` in the history is the pod's clock: the host's, under kind
    core.patch_namespaced_secret(name, NAMESPACE, {"stringData": {"admin-token": rotated}})
    try:
        wait_until_accepted(core, sorted(before), original, rotated, since)
        after = {p.metadata.name: (p.metadata.uid, restarts(p)) for p in proxy_pods(core)}
        assert after == before, "a pod was replaced or restarted"
    finally:  # the pods must run on the token in the Secret again (later steps read it there)
        since = time.time() - 5
        core.patch_namespaced_secret(name, NAMESPACE, {"stringData": {"admin-token": original}})
        wait_until_accepted(core, sorted(before), rotated, original, since)
