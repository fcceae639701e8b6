"""SIGTERM drains: /readyz fails at once, new requests are still served for
`shutdown_delay_ms`, then the public listener closes, in-flight requests finish (up to
`graceful_shutdown_timeout_ms`), and the process exits 0."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from harness import Metrics, ProxyProcess, Stack

pytestmark = pytest.mark.local_only

HOST = {"Host": "127.0.0.1"}
DELAY_S = 2.5  # server.shutdown_delay_ms for the drain test


def _overrides(stack: Stack, *, delay_ms: int, grace_ms: int) -> dict[str, Any]:
    return {
        "server": {"shutdown_delay_ms": delay_ms, "graceful_shutdown_timeout_ms": grace_ms},
        "upstreams": [
            {
                "name": "origin",
                "base_url": stack.origin_url,
                "connect_timeout_ms": 1000,
                "response_header_timeout_ms": 20_000,
            },
        ],
    }


def _in_flight(proxy: ProxyProcess) -> float:
    text = httpx.get(proxy.admin_url + "/metrics", timeout=2).text
    return Metrics.parse(text).value("openflare_in_flight_requests")


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{what} not within {timeout}s")


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def _start_request(url: str, results: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            results["response"] = httpx.get(url, headers=HOST, timeout=30)
        except httpx.HTTPError as exc:
            results["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_graceful_shutdown_drains_in_flight_request(
    stack: Stack, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_factory(_overrides(stack, delay_ms=int(DELAY_S * 1000), grace_ms=10_000))
    results: dict[str, Any] = {}
    thread = _start_request(proxy.url + "/slow?delay_ms=4000", results)
    _wait_for(lambda: _in_flight(proxy) == 1, 5, "the slow request in flight")

    sent = time.monotonic()
    proxy.signal(signal.SIGTERM)

    # 1. readiness fails at once, while the process still serves
    _wait_for(
        lambda: httpx.get(proxy.admin_url + "/readyz", timeout=1).status_code == 503,
        1.0,
        "/readyz 503",
    )
    ready = httpx.get(proxy.admin_url + "/readyz", timeout=1)
    assert ready.json()["status"] == "draining"
    assert httpx.get(proxy.admin_url + "/healthz", timeout=1).status_code == 200

    # 2. during shutdown_delay_ms new requests are still answered (load balancers catch up)
    during = httpx.get(proxy.url + "/debug/echo", params={"during": "delay"}, headers=HOST)
    assert during.status_code == 200
    assert during.json()["query_string"] == "during=delay"
    assert time.monotonic() - sent < DELAY_S - 0.2

    # 3. then the public listener closes: new connections are refused
    _wait_for(lambda: _refused(proxy.port), DELAY_S + 2.0, "public listener closed")
    closed_after = time.monotonic() - sent
    assert DELAY_S - 0.1 <= closed_after < DELAY_S + 2.0, closed_after
    assert proxy.alive()

    # 4. the in-flight request completes normally
    thread.join(timeout=10)
    assert "error" not in results, results.get("error")
    response = results["response"]
    assert response.status_code == 200
    assert response.json()["completed"] is True
    assert response.json()["delay_ms"] == 4000

    # 5. and the process exits 0, soon after the last request
    assert proxy.wait(timeout=10) == 0
    assert time.monotonic() - sent < 8.0
    draining = proxy.wait_log(event="draining")
    assert draining["in_flight"] == 1
    proxy.wait_log(event="stopped")
    assert proxy.access_log(response.headers["x-request-id"])["status"] == 200


def test_sigterm_when_idle_exits_quickly(
    stack: Stack, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_factory(_overrides(stack, delay_ms=0, grace_ms=10_000))
    assert httpx.get(proxy.url + "/debug/echo", headers=HOST).status_code == 200
    started = time.monotonic()
    proxy.signal(signal.SIGTERM)
    assert proxy.wait(timeout=10) == 0
    assert time.monotonic() - started < 5.0
    assert _refused(proxy.port)
    assert _refused(proxy.admin_port)


def test_grace_period_bounds_shutdown(
    stack: Stack, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    """A request longer than graceful_shutdown_timeout_ms is cut, the process still exits."""
    proxy = proxy_factory(_overrides(stack, delay_ms=0, grace_ms=1000))
    results: dict[str, Any] = {}
    thread = _start_request(proxy.url + "/slow?delay_ms=8000", results)
    _wait_for(lambda: _in_flight(proxy) == 1, 5, "the slow request in flight")
    started = time.monotonic()
    proxy.signal(signal.SIGTERM)
    code = proxy.wait(timeout=8)
    elapsed = time.monotonic() - started
    thread.join(timeout=5)
    assert code == 0
    assert 0.9 <= elapsed < 5.0, elapsed
    assert "response" not in results  # cut off: no complete 200 after the deadline
    assert isinstance(results["error"], httpx.HTTPError)
