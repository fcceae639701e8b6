"""The admin listener: health, readiness, metrics and the token-protected /admin/* API.
None of it is reachable through the public listener."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from harness import Metrics, Stack


def test_healthz(stack: Stack) -> None:
    response = httpx.get(stack.admin_url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz(stack: Stack) -> None:
    response = httpx.get(stack.admin_url + "/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert re.fullmatch(r"[0-9a-f]{12}", body["config_hash"])


def test_metrics_families_and_labels(stack: Stack, client: httpx.Client) -> None:
    before = stack.metrics()
    assert client.get("/api/time").status_code == 200
    assert client.get("/error/404").status_code == 404
    response = httpx.get(stack.admin_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    metrics = Metrics.parse(response.text)
    expected = {
        "openflare_requests_total": "counter",
        "openflare_request_duration_seconds": "histogram",
        "openflare_upstream_errors_total": "counter",
        "openflare_upstream_duration_seconds": "histogram",
        "openflare_in_flight_requests": "gauge",
        "openflare_panics_total": "counter",
        "openflare_rejected_requests_total": "counter",
    }
    for family, kind in expected.items():
        # the 0.0.4 text format names counters with _total, OpenMetrics without
        types = {metrics.family_type(family), metrics.family_type(family.removesuffix("_total"))}
        assert kind in types, (family, types)

    def delta(name: str, **labels: str) -> float:
        return metrics.value(name, **labels) - before.value(name, **labels)

    assert delta("openflare_requests_total", route="api", method="GET", status_class="2xx") == 1
    assert delta("openflare_requests_total", route="local", method="GET", status_class="4xx") == 1
    assert delta("openflare_request_duration_seconds_count", route="api") == 1
    assert delta("openflare_request_duration_seconds_bucket", route="api", le="+Inf") == 1
    assert delta("openflare_upstream_duration_seconds_count", upstream="origin") == 2
    assert delta("openflare_requests_total", route="local", status_class="4xx", code="404") == 1
    for labels, _ in metrics.find("openflare_requests_total"):
        # bounded labels only: never a path, host or client value
        assert set(labels) == {"route", "method", "status_class", "code"}, labels
        assert re.fullmatch(r"[1-5]xx|other", labels["status_class"])
        assert re.fullmatch(r"[1-5]\d\d|other", labels["code"])
        assert labels["code"][0] == labels["status_class"][0]
    for labels, _ in metrics.find("openflare_request_duration_seconds_bucket"):
        assert set(labels) == {"le", "route"}


def test_upstream_error_kinds_in_metrics(stack: Stack, client: httpx.Client) -> None:
    client.get("/slow", params={"delay_ms": 2500})  # 504: kind timeout
    stack.raw_request("GET", "/reset-mid-body?size=2048&delay_ms=0")  # kind reset
    metrics = stack.metrics()
    kinds = {labels["kind"] for labels, _ in metrics.find("openflare_upstream_errors_total")}
    assert {"timeout", "reset"} <= kinds
    assert kinds <= {"connect", "timeout", "reset", "protocol"}
    for labels, _ in metrics.find("openflare_upstream_errors_total"):
        assert set(labels) == {"upstream", "kind"}
        assert labels["upstream"] == "origin"


def test_metric_labels_are_bounded(stack: Stack, client: httpx.Client) -> None:
    """No raw path, host or unknown method ever becomes a label value."""
    marker = "cardinality-marker-7f3a"
    client.get(f"/debug/echo/{marker}")
    client.request("PURGE", f"/debug/echo/{marker}")
    with stack.client(headers={"Host": f"{marker}.example"}) as c:
        c.get("/")
    metrics = stack.metrics()
    assert marker not in metrics.text
    methods = {labels["method"] for labels, _ in metrics.find("openflare_requests_total")}
    assert "PURGE" not in methods
    assert "OTHER" in methods
    assert metrics.value("openflare_requests_total", route="none", status_class="4xx") >= 1


def test_metrics_not_served_on_public_port(stack: Stack, client: httpx.Client) -> None:
    stack.reset_hits()
    response = client.get("/metrics", params={"n": uuid.uuid4().hex})
    assert response.status_code == 404  # the local route forwards it; the origin has none
    assert response.headers["x-origin-seq"].isdigit()
    assert "openflare_" not in response.text
    assert stack.hits("/metrics") == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [("/healthz", 200), ("/readyz", 404), ("/admin/config", 404), ("/admin/config/reload", 404)],
)
def test_admin_endpoints_not_served_on_public_port(stack: Stack, path: str, status: int) -> None:
    """The public listener forwards these paths to the origin like any other."""
    with stack.client(headers={"Authorization": f"Bearer {stack.admin_token}"}) as c:
        response = c.get(path)
    assert response.status_code == status
    assert response.headers["x-origin-seq"].isdigit()  # answered by the origin
    assert "config_hash" not in response.text and "stages" not in response.text


def test_metrics_on_unknown_host_not_served(stack: Stack) -> None:
    with stack.client(headers={"Host": "metrics.internal"}) as c:
        response = c.get("/metrics")
    assert response.status_code == 404
    assert "openflare_" not in response.text


# ---- /admin/*


def test_admin_config_requires_token(stack: Stack) -> None:
    with stack.admin(token=None) as admin:
        response = admin.get("/admin/config")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token-wrong-token-123",
        "Bearer",
        "Basic {token}",
        "{token}",
        "Bearer {token}x",
        "Bearer x{token}",
        "Bearer {token_prefix}",
    ],
)
def test_admin_config_wrong_token_is_401(stack: Stack, authorization: str) -> None:
    value = authorization.format(token=stack.admin_token, token_prefix=stack.admin_token[:-1])
    response = httpx.get(stack.admin_url + "/admin/config", headers={"Authorization": value})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "hash" not in response.json()


def test_admin_config_with_token(stack: Stack) -> None:
    ready_hash = httpx.get(stack.admin_url + "/readyz").json()["config_hash"]
    with stack.admin() as admin:
        response = admin.get("/admin/config")
    assert response.status_code == 200
    body = response.json()
    assert body["hash"] == ready_hash
    assert body["dev_mode"] is False
    assert body["stages"][0] == "request_id"
    assert body["stages"][-1] == "forward"
    assert stack.admin_token not in response.text


def test_admin_reload_unchanged(stack: Stack) -> None:
    with stack.admin() as admin:
        first = admin.post("/admin/config/reload")  # "ok" only if a file changed since start
        assert first.status_code == 200, first.text
        before = admin.get("/admin/config").json()["hash"]
        response = admin.post("/admin/config/reload")
        after = admin.get("/admin/config").json()
    assert response.status_code == 200
    body = response.json()
    assert body["result"] == "unchanged"
    assert body["source"] == "admin_api"
    assert body["hash"] == before
    assert body["errors"] == []
    assert after["hash"] == before
    assert after["history"][-1]["result"] == "unchanged"
    assert httpx.get(stack.admin_url + "/readyz").json()["config_hash"] == before


def test_admin_reload_requires_token(stack: Stack) -> None:
    with stack.admin(token=None) as admin:
        response = admin.post("/admin/config/reload")
    assert response.status_code == 401


def test_admin_unknown_endpoint_is_json_404(stack: Stack) -> None:
    with stack.admin() as admin:
        response = admin.get("/admin/x")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "not_found"


def test_admin_unknown_endpoint_without_token_is_401(stack: Stack) -> None:
    """Without the token, the admin API does not reveal which endpoints exist."""
    with stack.admin(token=None) as admin:
        response = admin.get("/admin/x")
    assert response.status_code == 401
