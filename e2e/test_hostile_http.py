"""Hostile HTTP on raw sockets: request smuggling and framing, header injection, Host,
oversized everything.

Every case goes through a proxy whose origin is the raw-bytes recording origin
(testsite raw_origin.py), so each test can prove what reached the origin: nothing at all for a
refused request, and otherwise requests that are well formed by RFC 9112's strict grammar —
the proxy re-frames every request it forwards instead of passing the client's framing on.

Most requests are sent twice: with an ordinary method (parsed by llhttp) and with a rare token
method (`PURGEX`), which app.py's MethodFallbackParser hands to aiohttp's Python parser, so both
parsers are held to the same answers.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness import ProxyProcess, RawResponse, connect, read_response

pytestmark = pytest.mark.local_only

HOST = "127.0.0.1"
MAX_URI = 4096  # server.max_uri_bytes in proxy.test.yaml
MAX_HEADER_BYTES = 16384
MAX_HEADER_COUNT = 64


@pytest.fixture(scope="module")
def edge(module_proxy_factory: Callable[..., ProxyProcess], raw_origin: Any) -> ProxyProcess:
    """The test config with the raw origin behind it, without rate limits (hundreds of
    requests from one client) and without WAF rules (it blocks several of these payloads,
    e.g. CRLF in the target: here the proxy's own guarantees are under test); the cache stays
    on (it re-frames its fetches too)."""
    return module_proxy_factory(
        {"rule_files": {"rate_limit": None, "waf": None}}, origin_url=raw_origin.url
    )


def exchange(proxy: ProxyProcess, data: bytes, timeout: float = 5.0) -> RawResponse:
    with connect(HOST, proxy.port, timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def exchange_all(proxy: ProxyProcess, data: bytes, count: int) -> list[RawResponse]:
    """`count` responses read from one connection after sending `data` at once."""
    with connect(HOST, proxy.port, 5.0) as sock:
        sock.sendall(data)
        return [read_response(sock) for _ in range(count)]


def closed_by_proxy(sock: socket.socket) -> bool:
    sock.settimeout(3.0)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def origin_requests(raw_origin: Any) -> list[Any]:
    """Every request the origin received since the last reset, after checking that every
    connection's bytes are exactly a sequence of well-formed requests."""
    from openflare_testsite.raw_origin import parse_requests

    time.sleep(0.05)  # a forward would have happened before the answer; be generous
    requests = []
    for _, data, _ in raw_origin.snapshot():
        requests.extend(parse_requests(data))
    return requests


def with_method(data: bytes, method: bytes) -> bytes:
    _, sep, rest = data.partition(b" ")
    return method + sep + rest


# --------------------------------------------------------------------------------------------
# smuggling and framing: refused

H = b"Host: 127.0.0.1\r\n"
REFUSED: list[tuple[str, bytes, int]] = [
    (
        "cl_and_te",
        b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_and_cl",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "duplicate_cl_equal",
        b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    (
        "duplicate_cl_conflicting",
        b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    ("cl_list", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    ("cl_plus_sign", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc", 400),
    ("cl_negative", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\nabc", 400),
    ("cl_hex", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc", 400),
    ("cl_two_numbers", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 3 3\r\n\r\nabc", 400),
    (
        "te_chunked_not_last",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("te_identity", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 400),
    (
        "te_unknown",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_space_before_colon",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_twice",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_vertical_tab",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te_other_coding_then_chunked",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "te_on_http10",
        b"POST /s HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    ("obs_fold", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 400),
    (
        "obs_fold_hiding_te",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: foo\r\n chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("bare_lf_line_ends", b"GET /s HTTP/1.1\n" + b"Host: 127.0.0.1\nX-A: a\n\n", 400),
    ("bare_lf_in_header_block", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n", 400),
    ("bare_cr_in_header_value", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\rX-B: b\r\n\r\n", 400),
    ("nul_in_header_value", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("nul_in_target", b"GET /s\x00 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("nul_in_method", b"G\x00T /s HTTP/1.1\r\n" + H + b"\r\n", 400),
    (
        "chunk_size_not_hex",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk_size_negative",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk_size_0x_prefix",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk_size_trailing_space",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk_extension_with_lf",
        b"POST /s HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk_lines_bare_lf",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
        400,
    ),
    (
        "chunk_data_without_crlf",
        b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
        400,
    ),
    ("absolute_form", b"GET http://evil.example/s HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("authority_form", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 400),
    ("asterisk_form", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("http_0_9", b"GET /s\r\n\r\n", 400),
    ("http_2_in_request_line", b"GET /s HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("lowercase_protocol", b"GET /s http/1.1\r\n" + H + b"\r\n", 400),
    ("tab_in_request_line", b"GET\t/s HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space_before_header_colon", b"GET /s HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n", 400),
    ("header_line_without_colon", b"GET /s HTTP/1.1\r\n" + H + b"Oops\r\n\r\n", 400),
]
# the rare-method variants of these differ from llhttp in ways RFC 9112 allows
LLHTTP_ONLY = {"http_0_9", "nul_in_method", "authority_form"}
# each case through llhttp, and (with a method llhttp does not know) through the Python parser
REFUSED_BY_PARSER = [
    pytest.param(parser, name, data, status, id=f"{parser}-{name}")
    for parser in ("llhttp", "python")
    for name, data, status in REFUSED
    if parser == "llhttp" or name not in LLHTTP_ONLY
]


@pytest.mark.parametrize(("parser", "name", "data", "status"), REFUSED_BY_PARSER)
def test_malformed_framing_is_refused_and_never_forwarded(
    edge: ProxyProcess, raw_origin: Any, parser: str, name: str, data: bytes, status: int
) -> None:
    if parser == "python":
        data = with_method(data, b"PURGEX")
    raw_origin.reset()
    with connect(HOST, edge.port, 5.0) as sock:
        sock.sendall(data)
        response = read_response(sock)
        assert response.status == status, response.body
        assert b"raw-origin" not in response.body
        # the framing of the rest cannot be trusted: the connection ends after the answer
        assert response.header("Connection") == "close" or closed_by_proxy(sock)
    assert origin_requests(raw_origin) == []


def test_edge_refusals_name_their_reason(edge: ProxyProcess) -> None:
    """Refusals the pipeline makes (not the parser) carry the request id and a reason."""
    cases = {
        b"POST /s HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"0\r\n\r\n": "501 Not Implemented (transfer coding)",
        b"POST /s HTTP/1.0\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n": "400 Bad Request (transfer encoding http10)",
        b"GET /s HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n": "505 HTTP Version Not Supported",
    }
    for data, start in cases.items():
        response = exchange(edge, data)
        request_id = response.header("X-Request-ID")
        assert request_id
        assert response.text.startswith(start)
        assert response.text.endswith(f"request_id: {request_id}\n")


# --------------------------------------------------------------------------------------------
# framing handled per RFC 9112, always re-framed towards the origin


def test_content_length_body_is_forwarded_with_one_length(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    raw_origin.reset()
    response = exchange(
        edge, b"POST /cl HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    assert response.status == 200
    (request,) = origin_requests(raw_origin)
    assert (request.method, request.target, request.body) == ("POST", "/cl", b"hello")
    assert request.header_all("Content-Length") in (["5"], [])
    assert request.header_all("Transfer-Encoding") in ([], ["chunked"])


@pytest.mark.parametrize(
    ("name", "body_framing", "body"),
    [
        ("plain", b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
        ("extensions_dropped", b"3;name=value\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n", b"abcde"),
        ("trailers_dropped", b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n", b"abc"),
        ("uppercase_hex", b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ],
)
def test_chunked_body_is_reframed(
    edge: ProxyProcess, raw_origin: Any, name: str, body_framing: bytes, body: bytes
) -> None:
    raw_origin.reset()
    for coding in (b"chunked", b"Chunked"):  # transfer-coding names are case-insensitive
        response = exchange(
            edge,
            b"POST /te HTTP/1.1\r\n"
            + H
            + b"Transfer-Encoding: "
            + coding
            + b"\r\nConnection: close\r\n\r\n"
            + body_framing,
        )
        assert response.status == 200
    requests = origin_requests(raw_origin)
    assert [r.body for r in requests] == [body, body]
    for request in requests:
        assert b";" not in request.raw.split(b"\r\n\r\n", 1)[1]  # no extension survives
        assert b"X-Trailer" not in request.raw


def test_fat_get_body_is_forwarded_framed(edge: ProxyProcess, raw_origin: Any) -> None:
    raw_origin.reset()
    response = exchange(
        edge, b"GET /fat HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    assert response.status == 200
    (request,) = origin_requests(raw_origin)
    assert (request.method, request.body) == ("GET", b"hello")


def test_leading_empty_line_is_ignored(edge: ProxyProcess, raw_origin: Any) -> None:
    """RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request."""
    raw_origin.reset()
    response = exchange(edge, b"\r\nGET /lead HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert response.status == 200
    assert [r.target for r in origin_requests(raw_origin)] == ["/lead"]


def test_extra_whitespace_in_request_line_is_reframed(edge: ProxyProcess, raw_origin: Any) -> None:
    """RFC 9112 §3 lets a recipient split the request line on whitespace; the origin gets the
    canonical single-space line."""
    raw_origin.reset()
    response = exchange(edge, b"GET  /ws HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert response.status == 200
    (request,) = origin_requests(raw_origin)
    assert request.raw.startswith(b"GET /ws HTTP/1.1\r\n")


def test_http10_request_is_upgraded_and_answered_without_chunking(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    raw_origin.reset()
    with connect(HOST, edge.port, 5.0) as sock:
        sock.sendall(b"GET /chunked HTTP/1.0\r\n" + H + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))
    assert b"transfer-encoding" not in head.lower()  # an HTTP/1.0 client cannot read chunks
    assert body == b"onetwothree"  # delimited by the close
    (request,) = origin_requests(raw_origin)
    assert request.raw.startswith(b"GET /chunked HTTP/1.1\r\n")


def test_http10_without_host_is_routed_only_as_configured(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    """HTTP/1.0 may omit Host; the test config has no route for an empty host: 404."""
    raw_origin.reset()
    response = exchange(edge, b"GET /nohost HTTP/1.0\r\n\r\n")
    assert response.status == 404
    assert origin_requests(raw_origin) == []


def test_pipelined_requests_are_answered_in_order_and_forwarded_separately(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    raw_origin.reset()
    data = (
        b"POST /p1 HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc"
        b"GET /p2 HTTP/1.1\r\n" + H + b"\r\n"
        b"GET /p3 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
    )
    responses = exchange_all(edge, data, 3)
    assert [r.status for r in responses] == [200, 200, 200]
    ids = [r.header("X-Request-ID") for r in responses]
    assert len(set(ids)) == 3
    requests = origin_requests(raw_origin)
    assert [(r.method, r.target, r.body) for r in requests] == [
        ("POST", "/p1", b"abc"),
        ("GET", "/p2", b""),
        ("GET", "/p3", b""),
    ]
    assert [r.header("X-Request-ID") for r in requests] == ids


def test_body_sent_past_its_length_is_never_part_of_the_forwarded_request(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    """A body that declares 5 bytes and sends more: the rest is parsed as the client's next
    request — here garbage, so 400 and the connection closed. Sent in one write, aiohttp's
    parser reports the error for the whole read, so the valid first request is refused with
    it; sent apart, the first is forwarded with exactly its 5 bytes. Either way nothing of the
    excess ever reaches the origin."""
    tail = b"X" * 5000 + b"\r\n\r\n"
    head = b"POST /small HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"
    raw_origin.reset()
    assert [r.status for r in exchange_all(edge, head + tail, 1)] == [400]
    assert origin_requests(raw_origin) == []
    with connect(HOST, edge.port, 5.0) as sock:
        sock.sendall(head)
        first = read_response(sock)
        sock.sendall(tail)
        second = read_response(sock)
    assert (first.status, second.status) == (200, 400)
    (request,) = origin_requests(raw_origin)
    assert request.body == b"hello"


def test_smuggled_request_is_just_a_pipelined_request(edge: ProxyProcess, raw_origin: Any) -> None:
    """The classic CL.0 payload: the 'hidden' request is parsed, answered and forwarded as a
    request of its own, through the whole pipeline — never glued to the first one."""
    raw_origin.reset()
    responses = exchange_all(
        edge,
        b"POST /front HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n"
        b"GET /hidden HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
        2,
    )
    assert [r.status for r in responses] == [200, 200]
    requests = origin_requests(raw_origin)
    assert [(r.target, r.body) for r in requests] == [("/front", b""), ("/hidden", b"")]


def test_every_connection_to_the_origin_stayed_well_formed(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    """After all of the above on pooled keep-alive connections: each connection's bytes are
    still exactly a sequence of well-formed requests."""
    from openflare_testsite.raw_origin import parse_requests

    for _, data, _ in raw_origin.snapshot():
        parse_requests(data)


# --------------------------------------------------------------------------------------------
# header injection


def test_cr_or_lf_cannot_be_injected_through_the_target(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    raw_origin.reset()
    response = exchange(
        edge,
        b"GET /inj%0d%0aSet-Cookie:%20evil=1?q=%0d%0aX-Evil:%201 "
        b"HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    )
    assert response.status == 200
    assert response.header("Set-Cookie") is None and response.header("X-Evil") is None
    (request,) = origin_requests(raw_origin)  # the strict parse proves no raw CR/LF went on
    assert request.target == "/inj%0D%0ASet-Cookie:%20evil=1?q=%0d%0aX-Evil:%201"


def test_injected_request_id_is_replaced_not_echoed(edge: ProxyProcess) -> None:
    response = exchange(
        edge,
        b"GET /rid HTTP/1.1\r\n"
        + H
        + b"X-Request-ID: abc%0d%0aSet-Cookie: x\r\nConnection: close\r\n\r\n",
    )
    assert response.status == 200
    assert "%" not in (response.header("X-Request-ID") or "%")
    assert response.header("Set-Cookie") is None


@pytest.mark.parametrize("path", ["/inject-cr", "/inject-nul"])
def test_origin_header_with_cr_or_nul_is_never_relayed(edge: ProxyProcess, path: str) -> None:
    response = exchange(
        edge, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    )
    assert response.status == 502
    assert response.header("Set-Cookie") is None and response.header("X-Injected") is None
    assert response.text.startswith("502 Bad Gateway (invalid response from origin)")


def test_error_bodies_never_echo_the_request(edge: ProxyProcess) -> None:
    marker = "zz-echo-marker"
    for data in (
        f"GET /{marker} HTTP/1.1\r\nHost: {marker}.example\r\n\r\n".encode(),  # 404 no route
        f"GET /{marker}%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),  # 400 normalize
        f"GET /{marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-{marker}: a\rb\r\n\r\n".encode(),
    ):
        response = exchange(edge, data)
        assert response.status in (400, 404)
        assert marker not in response.text
        assert all(marker not in value for _, value in response.headers)


# --------------------------------------------------------------------------------------------
# Host


@pytest.mark.parametrize(
    ("host_lines", "status"),
    [
        ([], 400),
        (["127.0.0.1", "evil.example"], 400),
        (["127.0.0.1", "127.0.0.1"], 400),
        ([""], 400),
        (["127.0.0.1:abc"], 400),
        (["127.0.0.1:80:80"], 400),
        (["127.0.0.1/evil"], 400),
        (["user@127.0.0.1"], 400),
        (["127.0.0.1 evil"], 400),
        (["127.0.0.1?x"], 400),
        (["127.0.0.1#x"], 400),
        (["[::1"], 400),
        (["unknown.example"], 404),
        (["127.0.0.1."], 404),  # a different name: routed only as configured
    ],
)
def test_missing_or_malformed_host(
    edge: ProxyProcess, raw_origin: Any, host_lines: list[str], status: int
) -> None:
    raw_origin.reset()
    head = "GET /host HTTP/1.1\r\n" + "".join(f"Host: {h}\r\n" for h in host_lines)
    response = exchange(edge, (head + "Connection: close\r\n\r\n").encode())
    assert response.status == status
    assert origin_requests(raw_origin) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8080", "127.0.0.1:", "[::1]:80"])
def test_valid_host_forms(edge: ProxyProcess, raw_origin: Any, host: str) -> None:
    raw_origin.reset()
    response = exchange(
        edge, f"GET /ok HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    if host.startswith("["):
        assert response.status == 404  # valid, but no route for that host
        return
    assert response.status == 200
    (request,) = origin_requests(raw_origin)
    assert request.header_all("Host") == [host]


# --------------------------------------------------------------------------------------------
# oversized everything


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("request_line", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
        ("target_over_limit", b"GET /" + b"a" * MAX_URI + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
        (
            "header_count",
            b"GET /x HTTP/1.1\r\n"
            + H
            + b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER_COUNT + 40))
            + b"\r\n",
            431,
        ),
        (
            "one_huge_header",
            b"GET /x HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 2_000_000 + b"\r\n\r\n",
            431,
        ),
        (
            "many_cookies_one_line",
            b"GET /x HTTP/1.1\r\n"
            + H
            + b"Cookie: "
            + b"; ".join(b"c%d=%s" % (i, b"v" * 40) for i in range(600))
            + b"\r\n\r\n",
            431,
        ),
        (
            "many_cookie_lines",
            b"GET /x HTTP/1.1\r\n"
            + H
            + b"".join(b"Cookie: c%d=v\r\n" % i for i in range(MAX_HEADER_COUNT + 1))
            + b"\r\n",
            431,
        ),
        (
            "declared_body",
            b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 99999999999\r\n\r\n",
            413,
        ),
    ],
)
def test_oversized_requests_are_refused(
    edge: ProxyProcess, raw_origin: Any, name: str, data: bytes, status: int
) -> None:
    raw_origin.reset()
    with connect(HOST, edge.port, 10.0) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while we were still sending: the answer is already there
        response = read_response(sock)
    assert response.status == status
    assert origin_requests(raw_origin) == []


def test_oversized_floods_do_not_grow_memory(edge: ProxyProcess, raw_origin: Any) -> None:
    """Hundreds of oversized requests: the parser caps stop them before anything is
    buffered, so the proxy's resident memory stays flat (loopback, bounded in time)."""
    floods = [
        b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n" + H + b"\r\n",
        b"GET /x HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 1_500_000 + b"\r\n\r\n",
        b"GET /x HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(2000)) + b"\r\n",
    ]
    for data in floods:  # warm-up: first-use allocations are not growth
        exchange(edge, data, timeout=10)
    before = _rss_kib(edge.pid)
    deadline = time.monotonic() + 20
    sent = 0
    while sent < 150 and time.monotonic() < deadline:
        for data in floods:
            with connect(HOST, edge.port, 10.0) as sock:
                try:
                    sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                read_response(sock)
            sent += 1
    after = _rss_kib(edge.pid)
    assert sent >= 30
    assert after - before < 16 * 1024, f"RSS grew {after - before} KiB over {sent} floods"


def test_proxy_still_serves_after_the_abuse(edge: ProxyProcess) -> None:
    response = exchange(edge, b"GET /still HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert response.status == 200
    assert response.body == b"raw-origin ok\n"
    assert response.header("Server") == "openflare"  # the origin sent none: no library version
    assert os.path.exists(f"/proc/{edge.pid}")
