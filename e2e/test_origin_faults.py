"""Origin faults, proven against origins that misbehave on purpose: connection refused, DNS
failure, reset before the headers, reset mid-body (the client sees the abort, nothing is
cached), invalid HTTP (502), an origin that never answers (504 at the configured time), one that
streams forever (cut by `total_timeout_ms`), and an upstream with several targets: passive
health ejects a failing target for a while, and idempotent requests are retried on another
target — only when nothing was sent to the client yet.

One proxy serves the whole module: the raw-bytes origins (testsite raw_origin.py) behind
several upstreams, told apart by Host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness import Metrics, ProxyProcess, RawResponse, closed_port, connect, read_response

pytestmark = pytest.mark.local_only

HEADER_TIMEOUT_S = 1.0
TOTAL_TIMEOUT_S = 2.0
FAIL_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def second_origin() -> Iterator[Any]:
    from openflare_testsite.raw_origin import RawOrigin

    with RawOrigin().start_in_thread() as origin:
        yield origin


@pytest.fixture(scope="module")
def dead_port() -> int:
    return closed_port()


@pytest.fixture(scope="module")
def faults(
    module_proxy_factory: Callable[..., ProxyProcess],
    raw_origin: Any,
    second_origin: Any,
    dead_port: int,
) -> ProxyProcess:
    dead = f"http://127.0.0.1:{dead_port}"
    common = {"connect_timeout_ms": 500, "response_header_timeout_ms": 1000}
    upstreams = [
        {"name": "origin", "base_url": raw_origin.url, "total_timeout_ms": 2000, **common},
        {"name": "dead", "base_url": dead, **common},
        {"name": "nodns", "base_url": "http://openflare-test-origin.invalid:8000", **common},
        # healthy + dead: ejection after 2 consecutive failures, for 1.5 s
        {
            "name": "half",
            "targets": [raw_origin.url, dead],
            "max_fails": 2,
            "fail_timeout_ms": 1500,
            **common,
        },
        # two live origins, never ejected: where a retry lands is visible
        {"name": "pair", "targets": [raw_origin.url, second_origin.url], "max_fails": 0, **common},
        # healthy + dead, never ejected: every other request meets the dead one
        {"name": "flaky", "targets": [raw_origin.url, dead], "max_fails": 0, **common},
    ]
    routes = [
        {"id": name, "host": f"{name}.test", "path_prefix": "/", "upstream": name}
        for name in ("dead", "nodns", "half", "pair", "flaky")
    ]
    routes.append({"id": "local", "host": "127.0.0.1", "path_prefix": "/", "upstream": "origin"})
    return module_proxy_factory(
        {
            "upstreams": upstreams,
            "routing": {"routes": routes},
            "rule_files": {"rate_limit": None, "waf": None},
        },
        origin_url=raw_origin.url,
    )


def get(proxy: ProxyProcess, path: str, host: str = "127.0.0.1", **kwargs: Any) -> RawResponse:
    method = kwargs.pop("method", "GET")
    body: bytes = kwargs.pop("body", b"")
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    for name, value in kwargs.pop("headers", {}).items():
        head += f"{name}: {value}\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    with connect("127.0.0.1", proxy.port, 10.0) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        return read_response(sock)


def metrics(proxy: ProxyProcess) -> Metrics:
    return Metrics.parse(httpx.get(proxy.admin_url + "/metrics", timeout=5).text)


def upstream_errors(proxy: ProxyProcess, upstream: str, kind: str | None = None) -> float:
    labels = {"upstream": upstream} | ({"kind": kind} if kind else {})
    return metrics(proxy).value("openflare_upstream_errors_total", **labels)


def upstream_view(proxy: ProxyProcess, name: str) -> dict[str, Any]:
    response = httpx.get(
        proxy.admin_url + "/admin/config",
        headers={"Authorization": f"Bearer {proxy.token}"},
        timeout=5,
    )
    for view in response.json()["runtime"]["upstreams"]:
        if view["name"] == name:
            return dict(view)
    raise AssertionError(f"no upstream {name}")


# --------------------------------------------------------------------------------------------
# one target


def test_connection_refused_is_502(faults: ProxyProcess) -> None:
    before = upstream_errors(faults, "dead", "connect")
    response = get(faults, "/x", host="dead.test")
    assert response.status == 502
    assert response.text.startswith("502 Bad Gateway (cannot connect to origin)")
    assert upstream_errors(faults, "dead", "connect") == before + 1


def test_dns_failure_for_a_named_upstream_is_502(faults: ProxyProcess) -> None:
    started = time.monotonic()
    response = get(faults, "/x", host="nodns.test")
    assert response.status == 502
    assert response.text.startswith("502 Bad Gateway (cannot connect to origin)")
    assert time.monotonic() - started < HEADER_TIMEOUT_S
    assert faults.access_log(response.header("X-Request-ID") or "")["error"] == "upstream_connect"


@pytest.mark.parametrize(
    ("path", "message", "kind"),
    [
        ("/reset", "origin closed the connection", "reset"),
        ("/close", "origin closed the connection", "reset"),
        ("/invalid", "invalid response from origin", "protocol"),
        ("/garbage", "invalid response from origin", "protocol"),
    ],
)
def test_origin_failing_before_headers_is_502(
    faults: ProxyProcess, raw_origin: Any, path: str, message: str, kind: str
) -> None:
    before = upstream_errors(faults, "origin", kind)
    response = get(faults, path)
    assert response.status == 502
    assert response.text.startswith(f"502 Bad Gateway ({message})")
    assert upstream_errors(faults, "origin", kind) == before + 1


def test_origin_that_never_answers_is_504_at_the_header_timeout(faults: ProxyProcess) -> None:
    started = time.monotonic()
    response = get(faults, "/hang")
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert response.text.startswith("504 Gateway Timeout (origin did not answer in time)")
    assert HEADER_TIMEOUT_S - 0.05 <= elapsed < HEADER_TIMEOUT_S + 0.8


def test_reset_mid_body_aborts_the_client_and_caches_nothing(
    faults: ProxyProcess, raw_origin: Any
) -> None:
    """The response says `public, max-age=60`; cut short, it must never be stored."""
    raw_origin.reset()
    for _ in range(2):
        response = get(faults, "/reset-mid-body")
        assert response.status in (200, 502)  # 502: the cache read it whole before answering
        if response.status == 200:
            assert response.header("Content-Length") == "100000"
            assert not response.complete and len(response.body) < 100000
        assert response.header("X-Edge-Cache") != "HIT"
    assert len(raw_origin.wait_requests(2)) == 2  # the second went to the origin again


def test_origin_streaming_forever_is_cut_at_the_total_timeout(
    faults: ProxyProcess, raw_origin: Any
) -> None:
    started = time.monotonic()
    response = get(faults, "/forever")
    elapsed = time.monotonic() - started
    assert response.status == 200
    assert not response.complete  # aborted: the client can tell it is cut
    assert len(response.body) > 10_000  # it did stream for a while
    assert TOTAL_TIMEOUT_S - 0.1 <= elapsed < TOTAL_TIMEOUT_S + 1.5
    record = faults.access_log(response.header("X-Request-ID") or "")
    assert record["error"] == "upstream_total_timeout"
    deadline = time.monotonic() + 3
    while upstream_view(faults, "origin")["connections_in_use"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream_view(faults, "origin")["connections_in_use"] == 0


# --------------------------------------------------------------------------------------------
# several targets


def test_idempotent_requests_are_retried_on_another_target(
    faults: ProxyProcess, raw_origin: Any
) -> None:
    """`flaky` alternates a live and a dead target and never ejects: every GET still
    succeeds, each meeting of the dead target costing one connect error."""
    raw_origin.reset()
    before = upstream_errors(faults, "flaky", "connect")
    statuses = [get(faults, f"/r{i}", host="flaky.test").status for i in range(6)]
    assert statuses == [200] * 6
    assert upstream_errors(faults, "flaky", "connect") == before + 3
    assert sorted(r.target for r in raw_origin.wait_requests(6)) == [f"/r{i}" for i in range(6)]


def test_requests_with_a_body_are_never_retried(faults: ProxyProcess, raw_origin: Any) -> None:
    raw_origin.reset()
    statuses = [
        get(faults, f"/p{i}", host="flaky.test", method="POST", body=b"payload").status
        for i in range(4)
    ]
    assert sorted(statuses) == [200, 200, 502, 502]
    assert len(raw_origin.wait_requests(2)) == 2


def test_reset_before_headers_is_retried_once_on_the_other_target(
    faults: ProxyProcess, raw_origin: Any, second_origin: Any
) -> None:
    raw_origin.reset()
    second_origin.reset()
    response = get(faults, "/reset", host="pair.test")
    assert response.status == 502  # both reset: one retry, then the failure
    # each target got it (aiohttp itself also retries once on a pooled keep-alive connection
    # found closed, so a target may have seen it twice)
    assert {r.target for r in raw_origin.wait_requests(1)} == {"/reset"}
    assert {r.target for r in second_origin.wait_requests(1)} == {"/reset"}
    assert raw_origin.request_count() + second_origin.request_count() <= 4


def test_no_retry_once_the_response_has_started(
    faults: ProxyProcess, raw_origin: Any, second_origin: Any
) -> None:
    raw_origin.reset()
    second_origin.reset()
    # no-store: not a cache fill (which reads the body before answering) but a stream
    response = get(
        faults, "/reset-mid-body", host="pair.test", headers={"Cache-Control": "no-store"}
    )
    assert response.status == 200 and not response.complete
    time.sleep(0.3)
    assert raw_origin.request_count() + second_origin.request_count() == 1


def test_timeout_is_not_retried(faults: ProxyProcess, raw_origin: Any, second_origin: Any) -> None:
    """The origin may still be working on it, and the 504 must come at the configured time."""
    raw_origin.reset()
    second_origin.reset()
    started = time.monotonic()
    response = get(faults, "/hang", host="pair.test")
    assert response.status == 504
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 0.8
    assert raw_origin.request_count() + second_origin.request_count() == 1


def test_passive_health_ejects_a_failing_target_for_a_while(
    faults: ProxyProcess, raw_origin: Any
) -> None:
    before = upstream_errors(faults, "half", "connect")
    for i in range(6):  # the dead target fails twice (each time retried): ejected
        assert get(faults, f"/h{i}", host="half.test").status == 200
    view = upstream_view(faults, "half")
    dead = view["targets"][1]
    assert dead["healthy"] is False and dead["ejections"] == 1
    assert view["targets"][0]["healthy"] is True
    errors = upstream_errors(faults, "half", "connect")
    assert errors == before + 2
    for i in range(6):  # while ejected, the dead target is not even tried
        assert get(faults, f"/e{i}", host="half.test").status == 200
    assert upstream_errors(faults, "half", "connect") == errors
    assert faults.wait_log(event="upstream_target_ejected", upstream="half")["target"].endswith(
        f":{dead['url'].rsplit(':', 1)[1]}"
    )
    time.sleep(FAIL_TIMEOUT_S + 0.2)  # rested: tried again, and failing, ejected again
    for i in range(4):
        assert get(faults, f"/b{i}", host="half.test").status == 200
    assert upstream_errors(faults, "half", "connect") == errors + 2
    assert upstream_view(faults, "half")["targets"][1]["ejections"] == 2
