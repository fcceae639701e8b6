"""Slow and abusive clients on raw sockets (loopback only, every test bounded in time):
slowloris (header timeout), slow POST (body timeouts), idle keep-alive, the connection cap,
a client that stops reading (write timeout), and clients leaving mid-response without leaking
the upstream connection or the request's task.

Each test starts a proxy of its own with short timeouts, so the numbers it asserts are its own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from harness import Metrics, ProxyProcess, connect, read_response

pytestmark = pytest.mark.local_only

HOST = "127.0.0.1"
GET_HEAD = b"GET /debug/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def metrics(proxy: ProxyProcess) -> Metrics:
    return Metrics.parse(httpx.get(proxy.admin_url + "/metrics", timeout=5).text)


def runtime(proxy: ProxyProcess) -> dict[str, Any]:
    response = httpx.get(
        proxy.admin_url + "/admin/config",
        headers={"Authorization": f"Bearer {proxy.token}"},
        timeout=5,
    )
    response.raise_for_status()
    return dict(response.json()["runtime"])


def rejected(proxy: ProxyProcess, reason: str) -> float:
    return metrics(proxy).value("openflare_rejected_requests_total", stage="server", reason=reason)


def wait_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    sock.settimeout(timeout)
    started = time.monotonic()
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@contextmanager
def open_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    socks = [connect(HOST, port, 5.0) for _ in range(count)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------------------------
# slowloris: the request head must arrive within server.header_timeout_ms


def test_slowloris_head_is_cut_at_the_header_timeout(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy = proxy_factory({"server": {"header_timeout_ms": 1000, "idle_timeout_ms": 10000}})
    with connect(HOST, proxy.port, 5.0) as sock:
        sock.sendall(GET_HEAD)
        started = time.monotonic()
        cut = False
        for i in range(40):  # one header line every 100 ms: the head never completes in time
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 1.5:
                break
        data, _ = wait_closed(sock, 3.0)
        elapsed = time.monotonic() - started
    assert cut or data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:200]
    assert 0.9 < elapsed < 3.5
    assert rejected(proxy, "header_timeout") == 1


def test_silent_connection_is_closed_without_an_answer(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy = proxy_factory({"server": {"header_timeout_ms": 800, "idle_timeout_ms": 10000}})
    with connect(HOST, proxy.port, 5.0) as sock:
        data, elapsed = wait_closed(sock, 5.0)
    assert data == b""  # a connection that sent nothing is not worth a 408
    assert 0.7 < elapsed < 2.5


def test_many_slowloris_connections_do_not_starve_normal_clients(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy = proxy_factory({"server": {"header_timeout_ms": 1500, "idle_timeout_ms": 10000}})
    with open_sockets(proxy.port, 50) as socks:
        for sock in socks:
            sock.sendall(GET_HEAD)  # never finished
        for _ in range(5):
            response = httpx.get(proxy.url + "/debug/echo", headers={"Host": HOST}, timeout=5)
            assert response.status_code == 200
        started = time.monotonic()
        for sock in socks:
            data, _ = wait_closed(sock, 4.0)
            assert data.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 3.0
    assert wait_for(lambda: rejected(proxy, "header_timeout") == 50, 2.0)


def test_next_request_head_on_a_keepalive_connection_is_timed_too(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    """Idle between requests is the idle timeout (10 s here); once the next request starts,
    its head has the header timeout (1 s)."""
    proxy = proxy_factory({"server": {"header_timeout_ms": 1000, "idle_timeout_ms": 10000}})
    with connect(HOST, proxy.port, 5.0) as sock:
        sock.sendall(GET_HEAD + b"\r\n")
        assert read_response(sock).status == 200
        time.sleep(1.5)  # idle longer than the header timeout: still open
        sock.sendall(GET_HEAD)
        started = time.monotonic()
        data, _ = wait_closed(sock, 5.0)
    assert data.startswith(b"HTTP/1.1 408")
    assert 0.9 < time.monotonic() - started < 2.5


def test_idle_keepalive_connection_is_closed_at_the_idle_timeout(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy = proxy_factory({"server": {"header_timeout_ms": 5000, "idle_timeout_ms": 1000}})
    with connect(HOST, proxy.port, 5.0) as sock:
        sock.sendall(GET_HEAD + b"\r\n")
        assert read_response(sock).status == 200
        data, elapsed = wait_closed(sock, 5.0)
    assert data == b""
    assert 0.8 < elapsed < 3.0


# --------------------------------------------------------------------------------------------
# slow POST: server.read_timeout_ms per chunk, server.body_timeout_ms for the whole body


def _post_head(length: int) -> bytes:
    return (
        b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def test_body_pause_longer_than_read_timeout_is_408(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy = proxy_factory({"server": {"read_timeout_ms": 800}})
    with connect(HOST, proxy.port, 5.0) as sock:
        sock.sendall(_post_head(1000) + b"x" * 10)
        started = time.monotonic()
        response = read_response(sock)
        elapsed = time.monotonic() - started
    assert response.status == 408
    assert 0.7 < elapsed < 2.5
    assert response.text.startswith("408 Request Timeout")
    record = proxy.access_log(response.header("X-Request-ID") or "")
    assert record["error"] == "body_read_timeout"


def test_trickled_body_is_cut_at_the_body_timeout(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    """R.U.D.Y.: one byte every 100 ms never trips the per-chunk timeout (1 s); the whole
    body must still arrive within body_timeout_ms (1.5 s). (The WAF, which bounds its own
    inspection read by read_timeout_ms in total, is off here.)"""
    proxy = proxy_factory(
        {
            "server": {"read_timeout_ms": 1000, "body_timeout_ms": 1500},
            "rule_files": {"waf": None},
        }
    )
    with connect(HOST, proxy.port, 5.0) as sock:
        sock.sendall(_post_head(100_000))
        started = time.monotonic()
        sock.setblocking(False)
        answered = b""
        answered_after = -1.0
        while time.monotonic() - started < 4.0:
            try:
                answered += sock.recv(65536)
            except BlockingIOError:
                pass
            if answered:
                answered_after = time.monotonic() - started
                break
            try:
                sock.send(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        sock.setblocking(True)
        rest, closed_after = wait_closed(sock, 5.0)
    data = answered + rest
    assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert 1.3 < answered_after < 2.5
    assert closed_after < 3.0  # the unread rest is drained for at most 2 s (app.py)
    request_id = next(
        line.split(b": ", 1)[1].decode()
        for line in data.split(b"\r\n")
        if line.lower().startswith(b"x-request-id")
    )
    assert proxy.access_log(request_id)["error"] == "body_timeout"


# --------------------------------------------------------------------------------------------
# the connection cap


def test_connections_over_the_cap_get_a_clean_503(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy = proxy_factory(
        {"server": {"max_connections": 5, "header_timeout_ms": 10000, "idle_timeout_ms": 10000}}
    )
    with open_sockets(proxy.port, 5) as held:
        time.sleep(0.2)  # accepted and counted
        with connect(HOST, proxy.port, 5.0) as extra:
            extra.sendall(GET_HEAD + b"\r\n")
            response = read_response(extra)
            assert response.status == 503
            assert response.header("Retry-After") == "1"
            assert response.header("Connection") == "close"
            assert response.text == "503 Service Unavailable (too many connections)\n"
            assert wait_closed(extra, 3.0)[0] == b""
        # the held ones still work
        held[0].sendall(GET_HEAD + b"\r\n")
        assert read_response(held[0]).status == 200
    # once they are gone, new connections are served again
    assert wait_for(
        lambda: httpx.get(proxy.url + "/debug/echo", headers={"Host": HOST}).status_code == 200,
        3.0,
    )
    assert rejected(proxy, "max_connections") == 1


# --------------------------------------------------------------------------------------------
# a client that does not read: server.write_timeout_ms


def test_client_that_stops_reading_is_cut_after_the_write_timeout(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy = proxy_factory({"server": {"write_timeout_ms": 700}})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((HOST, proxy.port))
    try:
        sock.sendall(b"GET /large?size=67108864 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert wait_for(lambda: rejected(proxy, "write_timeout") == 1, 8.0)
        received, _ = wait_closed(sock, 5.0)
    finally:
        sock.close()
    assert len(received) < 64 * 1024 * 1024  # cut off, never the whole body
    record = proxy.wait_log(5.0, event="access", path="/large")
    assert record["error"] == "client_write_timeout"
    assert wait_for(lambda: runtime(proxy)["upstreams"][0]["connections_in_use"] == 0, 3.0)


# --------------------------------------------------------------------------------------------
# clients leaving mid-response: nothing leaks


def _baseline(proxy: ProxyProcess) -> int:
    """Tasks once the proxy is warm (the cache store's sweeper starts with its first entry)."""
    httpx.get(proxy.url + "/debug/echo", headers={"Host": HOST}, timeout=5)
    httpx.get(proxy.url + "/cache/public-long", headers={"Host": HOST}, timeout=5)
    time.sleep(0.3)
    return int(runtime(proxy)["tasks"])


def _settled(proxy: ProxyProcess, tasks: int) -> bool:
    view = runtime(proxy)
    upstream = view["upstreams"][0]
    return (
        upstream["connections_in_use"] == 0
        and view["in_flight_requests"] == 0
        and view["tasks"] <= tasks
    )


@pytest.mark.parametrize(
    ("target", "read_first"),
    [
        ("/stream/chunked?chunks=2000&size=1024&delay_ms=20", True),  # mid-body, flowing
        ("/slow-body?delay_ms=30000", True),  # headers sent, body stalls for 30 s
        ("/slow?delay_ms=30000", False),  # still waiting for the response headers
        ("/large?size=33554432", True),  # a large fast body
    ],
)
def test_client_leaving_mid_response_leaks_no_upstream_connection_or_task(
    proxy_factory: Callable[..., ProxyProcess], target: str, read_first: bool
) -> None:
    proxy = proxy_factory()
    tasks = _baseline(proxy)
    for _ in range(5):
        with connect(HOST, proxy.port, 5.0) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            if read_first:
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            else:
                time.sleep(0.3)
        # closed by the with-block, mid-response
    assert wait_for(lambda: _settled(proxy, tasks), 3.0), runtime(proxy)

    def left() -> list[Any]:
        return [
            r.get("error")
            for r in proxy.log_records()
            if r.get("event") == "access" and r.get("path") == target.split("?")[0]
        ]

    assert wait_for(lambda: left().count("client_disconnected") == 5, 3.0), left()


def test_leader_of_a_cache_fill_leaving_neither_leaks_nor_breaks_the_fill(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    """The cache fetch runs as a task of its own: the client that started it leaving must not
    stop the store, and once it is done nothing is held."""
    proxy = proxy_factory()
    tasks = _baseline(proxy)
    target = "/cache/custom?cc=public,%20max-age%3D60&delay_ms=500&u=leader-leaves"
    with connect(HOST, proxy.port, 5.0) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        time.sleep(0.1)
    time.sleep(0.8)
    response = httpx.get(proxy.url + target, headers={"Host": HOST}, timeout=5)
    assert response.status_code == 200
    assert response.headers["x-edge-cache"] == "HIT"
    assert wait_for(lambda: _settled(proxy, tasks), 3.0), runtime(proxy)
