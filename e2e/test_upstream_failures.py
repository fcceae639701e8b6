"""Origin failures map to the right status: too slow → 504, unreachable → 502, broken
mid-body → a truncated response the client can detect; origin errors pass through as they are."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from harness import Metrics, OriginProcess, ProxyProcess, Stack, closed_port

HEADER_TIMEOUT_S = 1.5  # upstreams[0].response_header_timeout_ms in proxy.test.yaml


def _upstream_errors(metrics: Metrics, kind: str) -> float:
    return metrics.value("openflare_upstream_errors_total", upstream="origin", kind=kind)


def test_slow_origin_is_504_with_request_id(stack: Stack, client: httpx.Client) -> None:
    before = _upstream_errors(stack.metrics(), "timeout")
    started = time.monotonic()
    response = client.get("/slow", params={"delay_ms": 3000})
    elapsed = time.monotonic() - started
    request_id = response.headers["x-request-id"]
    assert response.status_code == 504
    assert response.text == (
        f"504 Gateway Timeout (origin did not answer in time)\nrequest_id: {request_id}\n"
    )
    assert HEADER_TIMEOUT_S - 0.1 <= elapsed < 2.9
    assert _upstream_errors(stack.metrics(), "timeout") == before + 1


def test_slow_body_after_fast_headers_is_not_cut(client: httpx.Client) -> None:
    """The header timeout bounds time-to-first-byte only; a body that takes longer than it
    still arrives whole."""
    response = client.get("/slow-body", params={"delay_ms": 1800})
    assert response.status_code == 200
    body = response.json()
    assert (body["delay_ms"], body["body"]) == (1800, "late")


def test_origin_just_under_header_timeout_is_200(client: httpx.Client) -> None:
    response = client.get("/slow", params={"delay_ms": 700})
    assert response.status_code == 200
    assert response.json()["completed"] is True


@pytest.mark.parametrize("code", [500, 502, 503, 504, 404, 429])
def test_origin_error_statuses_pass_through(client: httpx.Client, code: int) -> None:
    response = client.get(f"/error/{code}")
    assert response.status_code == code
    body = response.json()  # the origin's JSON, not an edge error page
    assert body["status"] == code
    assert body["error"] is True
    assert response.headers["x-origin-seq"] == str(body["seq"])


def test_origin_error_is_not_counted_as_upstream_error(stack: Stack, client: httpx.Client) -> None:
    before = stack.metrics().value("openflare_upstream_errors_total")
    assert client.get("/error/503").status_code == 503
    assert stack.metrics().value("openflare_upstream_errors_total") == before


@pytest.mark.parametrize(
    ("path", "declared", "sent"),
    [
        ("/reset-mid-body?size=65536&mode=rst", 65536, 32768),
        ("/reset-mid-body?size=65536&mode=fin", 65536, 32768),
        ("/reset-mid-body?size=65536&mode=exception", 65536, 32768),
        ("/truncated?declared=1000&sent=500", 1000, 500),
    ],
)
def test_origin_breaking_mid_body_truncates_client_response(
    stack: Stack, path: str, declared: int, sent: int
) -> None:
    before = _upstream_errors(stack.metrics(), "reset")
    response = stack.raw_request("GET", path)
    assert response.status == 200
    assert response.header("Content-Length") == str(declared)
    assert not response.complete
    assert len(response.body) <= sent < declared
    assert _upstream_errors(stack.metrics(), "reset") == before + 1


def test_origin_breaking_mid_body_is_an_error_for_httpx(client: httpx.Client) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get("/reset-mid-body", params={"size": 65536})


def test_proxy_keeps_serving_after_broken_origin_responses(stack: Stack) -> None:
    for _ in range(3):
        stack.raw_request("GET", "/reset-mid-body?size=4096&mode=rst&delay_ms=0")
    response = stack.raw_request("GET", "/debug/echo?after-reset=1")
    assert response.status == 200
    assert response.json()["query_string"] == "after-reset=1"


# ---- origin unreachable (own proxies)


@pytest.mark.local_only
def test_origin_down_is_502(proxy_factory: Callable[..., ProxyProcess]) -> None:
    proxy = proxy_factory(origin_url=f"http://127.0.0.1:{closed_port()}")
    response = httpx.get(proxy.url + "/debug/echo", headers={"Host": "127.0.0.1"}, timeout=10)
    request_id = response.headers["x-request-id"]
    assert response.status_code == 502
    assert response.text == (
        f"502 Bad Gateway (cannot connect to origin)\nrequest_id: {request_id}\n"
    )
    metrics = Metrics.parse(httpx.get(proxy.admin_url + "/metrics").text)
    assert _upstream_errors(metrics, "connect") == 1
    assert metrics.value("openflare_requests_total", route="local", status_class="5xx") == 1
    record = proxy.access_log(request_id)
    assert record["status"] == 502
    assert record["error"] == "upstream_connect"


@pytest.mark.local_only
def test_origin_going_down_and_coming_back(
    proxy_factory: Callable[..., ProxyProcess],
    origin_factory: Callable[..., OriginProcess],
) -> None:
    origin = origin_factory()
    proxy = proxy_factory(origin_url=origin.url)
    with httpx.Client(base_url=proxy.url, headers={"Host": "127.0.0.1"}, timeout=10) as c:
        assert c.get("/debug/echo").status_code == 200  # leaves a pooled keep-alive connection
        origin.stop()
        down = c.get("/debug/echo")
        assert down.status_code == 502
        assert down.text.startswith("502 Bad Gateway (")
        origin_factory(port=origin.port)
        for attempt in range(3):
            back = c.get("/debug/echo", params={"attempt": attempt})
            assert back.status_code == 200, back.text
            assert back.json()["query_string"] == f"attempt={attempt}"


@pytest.mark.local_only
def test_origin_closing_idle_keepalive_is_not_a_502(
    proxy_factory: Callable[..., ProxyProcess],
    origin_factory: Callable[..., OriginProcess],
) -> None:
    """After the origin closed a pooled idle connection (its keep-alive timeout is 1 s
    here), the next request must use a fresh connection, not fail on the dead one."""
    origin = origin_factory(keep_alive_timeout=1)
    proxy = proxy_factory(origin_url=origin.url)
    with httpx.Client(base_url=proxy.url, headers={"Host": "127.0.0.1"}, timeout=10) as c:
        assert c.get("/debug/echo").status_code == 200
        time.sleep(1.5)
        response = c.get("/debug/echo", params={"after": "idle"})
        assert response.status_code == 200, response.text
        assert response.json()["query_string"] == "after=idle"
