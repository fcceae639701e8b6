"""Host + longest-prefix routing (configs/proxy.test.yaml: api, static, local for host
127.0.0.1, docs-host for docs.example.test, no default upstream)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from harness import UUID4_RE, Stack


def _requests(stack: Stack, route: str) -> float:
    return stack.metrics().value("openflare_requests_total", route=route)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api/echo", "api"),
        ("/api/time", "api"),
        ("/static/style.css", "static"),
        ("/debug/echo", "local"),
        ("/", "local"),
        ("/api", "local"),  # the prefix is "/api/": "/api" itself is not under it
        ("/apix/y", "local"),
        ("/staticfoo", "local"),
    ],
)
def test_longest_prefix_route_for_host(
    stack: Stack, client: httpx.Client, path: str, route: str
) -> None:
    before = stack.metrics()
    stack.reset_hits()
    # a unique query keeps cacheable paths (/, /static/) from being answered by the cache
    response = client.get(path, params={"route-test": uuid.uuid4().hex})
    after = stack.metrics()
    # the origin answered (404 from the origin for paths it does not serve is still routed)
    assert response.headers["x-origin-seq"].isdigit()
    assert stack.hits(path) == 1
    for name in ("api", "static", "local", "docs-host", "none"):
        delta = after.value("openflare_requests_total", route=name) - before.value(
            "openflare_requests_total", route=name
        )
        assert delta == (1 if name == route else 0), f"route {name}: {delta}"


@pytest.mark.parametrize(
    "host", ["docs.example.test", "DOCS.Example.TEST", "docs.example.test:8080"]
)
def test_host_route(stack: Stack, host: str) -> None:
    before = _requests(stack, "docs-host")
    local_before = _requests(stack, "local")
    with stack.client(headers={"Host": host}) as c:
        response = c.get("/debug/echo")
    assert response.status_code == 200
    seen = dict(response.json()["headers"])
    assert seen["host"] == host  # pass_host_header: the origin gets the client's Host
    assert _requests(stack, "docs-host") == before + 1
    assert _requests(stack, "local") == local_before


@pytest.mark.parametrize(
    "host", ["unknown.example.test", "example.test", "127.0.0.2", "docs.example.test.evil"]
)
def test_unknown_host_is_404_with_request_id(stack: Stack, host: str) -> None:
    stack.reset_hits()
    before = _requests(stack, "none")
    with stack.client(headers={"Host": host}) as c:
        response = c.get("/debug/echo/unrouted")
    request_id = response.headers["x-request-id"]
    assert response.status_code == 404
    assert UUID4_RE.match(request_id)
    assert response.text == (
        f"404 Not Found (no route matches this host and path)\nrequest_id: {request_id}\n"
    )
    assert "x-origin-seq" not in response.headers
    assert stack.hits("/debug/echo/unrouted") == 0
    assert _requests(stack, "none") == before + 1


def test_missing_host_is_400(stack: Stack) -> None:
    """HTTP/1.1 without Host is refused before routing. (aiohttp's parser answers this one
    itself, so the body is aiohttp's, not the proxy's request-id error.)"""
    stack.reset_hits()
    response = stack.raw_request("GET", "/debug/echo/nohost", send_host=False)
    assert response.status == 400
    assert "Host" in response.text
    assert stack.hits("/debug/echo/nohost") == 0


@pytest.mark.local_only
def test_access_log_names_route_and_upstream(local_stack: Stack) -> None:
    assert local_stack.proxy is not None
    with local_stack.client(headers={"Host": "docs.example.test"}) as c:
        response = c.get("/debug/echo?q=1", headers={"X-Request-ID": "routing-log-docs-1"})
    assert response.status_code == 200
    record = local_stack.proxy.access_log("routing-log-docs-1")
    assert record["route"] == "docs-host"
    assert record["upstream"] == "origin"
    assert record["host"] == "docs.example.test"
    assert record["path"] == "/debug/echo"
    assert record["status"] == 200
    assert record["upstream_status"] == 200
    assert record["method"] == "GET"
    assert record["client_ip"] == "127.0.0.1"
    assert record["error"] is None


@pytest.mark.local_only
def test_access_log_for_unrouted_request(local_stack: Stack) -> None:
    assert local_stack.proxy is not None
    with local_stack.client(headers={"Host": "nowhere.test"}) as c:
        response = c.get("/x", headers={"X-Request-ID": "routing-log-none-1"})
    assert response.status_code == 404
    record = local_stack.proxy.access_log("routing-log-none-1")
    assert record["route"] == "none"
    assert record["upstream"] is None
    assert record["status"] == 404
    assert record["error"] == "no_route"
    assert record["upstream_status"] is None
