"""The pre-rendered answer from the cache (`StoredResponse`) against what aiohttp sends for the
same headers through a `web.Response` (how stored responses were answered before): the same
status line, header lines (order aside) and body, on a real socket, for HEAD, 304, HTTP/1.0,
keep-alive and close, stored or added Date/Server/Content-Type and per-request headers that
share a stored name. Both ways out are checked: `Exchange.send` (`send_now`, one transport
write) and aiohttp's own `prepare` / `write_eof` (`_start`). Also pins the aiohttp internals
`StoredResponse` relies on."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_writer import StreamWriter, _serialize_headers
from aiohttp.test_utils import RawTestServer, make_mocked_request
from multidict import CIMultiDict

from openflare.cache.entry import (
    HAS_CONTENT_TYPE,
    HAS_DATE,
    HAS_ETAG,
    HAS_SERVER,
    first_value,
    header_flags,
    parse_headers,
    render_headers,
    without_headers,
)
from openflare.pipeline.base import Exchange
from openflare.pipeline.stored_response import RenderedResponse, StoredResponse

BODY = b"stored body " * 10
ORIGIN_HEADERS = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Date", "Sun, 29 Nov 2020 14:57:09 GMT"),
    ("Server", "origin/1.0"),
    ("Cache-Control", "public, max-age=600"),
    ("ETag", '"abc"'),
    ("Vary", "Accept-Encoding"),
    ("Vary", "Accept-Language"),  # two lines of one name: both kept, in order
    ("RateLimit", "limit=1000, remaining=999"),  # replaced by the limiter's
    ("X-Edge-Cache", "HIT"),  # an upstream edge's debug header: replaced by ours
    ("Server-Timing", "origin;dur=3"),  # kept, ours added next to it
)
BARE_HEADERS = (("Cache-Control", "public, max-age=600"),)  # no Date, Server, Content-Type

Build = Callable[[bytes, int, bytes, str], web.StreamResponse]


def stored(block: bytes, status: int, body: bytes, _: str) -> web.StreamResponse:
    return StoredResponse(status, "OK" if status == 200 else None, block, header_flags(block), body)


def reference(block: bytes, status: int, body: bytes, _: str) -> web.StreamResponse:
    """What the cache stage answered before: the stored headers copied into a web.Response."""
    headers = CIMultiDict(parse_headers(block))
    if status == 304:
        return web.Response(status=304, headers=headers)
    return web.Response(status=status, reason="OK", body=body, headers=headers)


class Trace:
    """Stands in for the decision trace: Server-Timing is added, X-Edge-Trace set."""

    def apply_headers(self, exchange: Exchange, headers: CIMultiDict[str]) -> None:
        headers.add("Server-Timing", "edge;dur=1")
        headers["X-Edge-Trace"] = "{}"


@pytest.fixture
async def server() -> AsyncIterator[tuple[RawTestServer, dict[str, object]]]:
    case: dict[str, object] = {}

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        exchange = Exchange(request, 0.0, bool(case["debug"]))
        exchange.request_id = "req-1"
        exchange.cache_status, exchange.cache_ttl, exchange.cache_age = "HIT", 590, 10
        exchange.extra_headers = list(case["extra"])  # type: ignore[call-overload]
        if case["trace"]:
            exchange.trace = Trace()  # type: ignore[assignment]
        build: Build = case["build"]  # type: ignore[assignment]
        args = (case["block"], case["status"], case["body"], request.method)
        response = build(*args)  # type: ignore[arg-type]
        response.headers["Age"] = "10"
        response.headers["Cache-Status"] = "OpenFlare; hit; ttl=590"
        if case["via"] == "send":
            await exchange.send(response)
            case["bytes_sent"] = exchange.bytes_sent
        else:  # returned unsent: aiohttp prepares it after the handler
            exchange.finalize_headers(response)
            case["bytes_sent"] = None  # counted by Exchange.send only
        return response

    async with RawTestServer(handler) as raw:
        yield raw, case


async def exchange_bytes(port: int, request: bytes, head_only: bool) -> tuple[bytes, bytes, bool]:
    """(head, body, whether the server closed the connection after the answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        length = int(match.group(1)) if match and not head_only else 0
        body = await reader.readexactly(length)
        try:
            extra = await asyncio.wait_for(reader.read(1), 0.2)
            closed = extra == b""
        except TimeoutError:
            closed = False  # still open: kept alive
        return head, body, closed
    finally:
        writer.close()


def lines_of(head: bytes) -> tuple[bytes, Counter[bytes]]:
    status_line, *lines = head[:-4].split(b"\r\n")
    normalized = [
        b"Date: <now>" if line.startswith(b"Date: ") and b"2020" not in line else line
        for line in lines
    ]
    return status_line, Counter(normalized)


CASES = [
    # (method, version, connection, origin headers, status, extra, debug, trace)
    ("GET", "1.1", "", ORIGIN_HEADERS, 200, (), False, False),
    ("GET", "1.1", "close", ORIGIN_HEADERS, 200, (), False, False),
    ("GET", "1.0", "keep-alive", ORIGIN_HEADERS, 200, (), False, False),
    ("GET", "1.0", "", ORIGIN_HEADERS, 200, (), False, False),
    ("HEAD", "1.1", "", ORIGIN_HEADERS, 200, (), False, False),
    ("GET", "1.1", "", ORIGIN_HEADERS, 304, (), False, False),
    ("GET", "1.1", "", BARE_HEADERS, 200, (), False, False),
    ("HEAD", "1.0", "keep-alive", BARE_HEADERS, 200, (), False, False),
    ("GET", "1.1", "", BARE_HEADERS, 304, (), False, False),
    (
        "GET",
        "1.1",
        "",
        ORIGIN_HEADERS,
        200,
        (("RateLimit", "limit=10, remaining=9"), ("RateLimit-Policy", "10;w=60")),
        True,
        True,
    ),
    ("GET", "1.1", "", BARE_HEADERS, 200, (("RateLimit", "limit=10"),), True, True),
]


@pytest.mark.parametrize("via", ["send", "prepare"])
@pytest.mark.parametrize(
    ("method", "version", "connection", "origin", "status", "extra", "debug", "trace"), CASES
)
async def test_a_stored_answer_is_what_aiohttp_sends_for_the_same_headers(
    server: tuple[RawTestServer, dict[str, object]],
    via: str,
    method: str,
    version: str,
    connection: str,
    origin: tuple[tuple[str, str], ...],
    status: int,
    extra: tuple[tuple[str, str], ...],
    debug: bool,
    trace: bool,
) -> None:
    raw, case = server
    block = render_headers(origin)
    body = BODY
    if status == 304:
        block = without_headers(block, ("Content-Length", "Content-Type", "Content-Encoding"))
        body = b""
    request = f"{method} /x HTTP/{version}\r\nHost: edge.test\r\n"
    if connection:
        request += f"Connection: {connection}\r\n"
    request += "\r\n"
    results = []
    for build in (reference, stored):
        case.update(
            build=build, block=block, status=status, body=body, extra=extra, debug=debug,
            trace=trace, via=via,
        )  # fmt: skip
        head, sent_body, closed = await exchange_bytes(
            raw.port or 0, request.encode(), method == "HEAD"
        )
        results.append((lines_of(head), sent_body, closed, case["bytes_sent"]))
    assert results[1] == results[0]
    (status_line, lines), sent_body, _, _ = results[1]
    assert (
        status_line
        == f"HTTP/{version} {status} {'OK' if status == 200 else 'Not Modified'}".encode()
    )
    names = Counter(line.split(b":", 1)[0].lower() for line in lines)
    for name in (b"date", b"server", b"x-request-id", b"age", b"cache-status", b"ratelimit"):
        assert names[name] <= 1, lines  # never a stored line next to an added one
    assert sent_body == (b"" if method == "HEAD" or status == 304 else BODY)


def test_the_block_holds_validated_lines_and_reads_back() -> None:
    pairs = [("Content-Type", "text/plain"), ("X-Bad", "a\x00b"), ("Vary", "A"), ("Vary", "B")]
    block = render_headers(pairs)
    assert block == b"Content-Type: text/plain\r\nVary: A\r\nVary: B\r\n"  # NUL: never sendable
    assert parse_headers(block) == [("Content-Type", "text/plain"), ("Vary", "A"), ("Vary", "B")]
    assert header_flags(block) == HAS_CONTENT_TYPE
    origin = render_headers(ORIGIN_HEADERS)
    assert header_flags(origin) == HAS_DATE | HAS_SERVER | HAS_CONTENT_TYPE | HAS_ETAG
    assert (
        first_value(origin, "etag") == '"abc"' and first_value(origin, "vary") == "Accept-Encoding"
    )
    assert first_value(origin, "Last-Modified") is None
    assert header_flags(render_headers([("ETag", ""), ("Last-Modified", "x")])) == 16  # only LM
    assert without_headers(block, ("vary",)) == b"Content-Type: text/plain\r\n"
    assert render_headers([("X-Raw", "caf\udce9")]) == b"X-Raw: caf\xe9\r\n"  # origin's bytes


async def test_aiohttp_internals_the_stored_response_relies_on() -> None:
    """`StoredResponse` overrides `_start` (called by `prepare`) and puts its block into the
    head `StreamWriter.write_headers` leaves in `_headers_buf`: if aiohttp changes either, this
    fails before any answer goes out wrong."""
    assert "_start" in vars(web.StreamResponse)
    assert "self._start(request)" in _source(web.StreamResponse.prepare)
    assert "_must_be_empty_body" in _source(web.StreamResponse.prepare)
    assert "_headers_buf" in _source(StreamWriter._send_headers_with_payload)
    loop = asyncio.get_running_loop()
    protocol = aiohttp.client_proto.ResponseHandler(loop)
    writer = StreamWriter(protocol, loop)
    await writer.write_headers("HTTP/1.1 200 OK", CIMultiDict({"A": "1"}))
    assert writer._headers_buf == b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n"
    # send_now: the serializer write_headers uses (it refuses a header injection), the
    # counting write that refuses a closing transport, and the flags that make aiohttp's own
    # prepare / write_eof after the handler do nothing
    assert "_serialize_headers(status_line, headers)" in _source(StreamWriter.write_headers)
    assert "self.output_size += size" in _source(StreamWriter._write)
    assert "is_closing()" in _source(StreamWriter._write)
    assert "if self._eof:" in _source(StreamWriter.write_eof)
    assert "if self._eof_sent:" in _source(web.StreamResponse.prepare)
    with pytest.raises(ValueError, match="header injection"):
        _serialize_headers("HTTP/1.1 200 OK", CIMultiDict({"X-Request-ID": "a\r\nB: 1"}))


async def test_a_stored_answer_to_a_client_that_left_raises_connection_reset() -> None:
    class Closed:
        def is_closing(self) -> bool:
            return True

    loop = asyncio.get_running_loop()
    protocol = aiohttp.client_proto.ResponseHandler(loop)
    protocol.transport = Closed()  # type: ignore[assignment]
    request = make_mocked_request("GET", "/x", writer=StreamWriter(protocol, loop))
    response = StoredResponse(200, "OK", b"", 0, b"body")
    with pytest.raises(ConnectionResetError):
        response.send_now(request)


EDGE_HEADERS = {"Content-Type": "application/json", "Retry-After": "7", "Cache-Control": "no-store"}
EDGE_BODY = b'{"error":"rate_limited"}'
EDGE_CASES = [
    # (method, version, connection, status, force_close, extra)
    ("GET", "1.1", "", 429, False, ()),
    ("GET", "1.1", "", 429, False, (("RateLimit", '"api";r=0;t=7'), ("RateLimit-Policy", "x"))),
    ("HEAD", "1.1", "", 403, False, ()),
    ("GET", "1.1", "close", 403, False, ()),
    ("GET", "1.0", "keep-alive", 413, True, ()),
    ("GET", "1.0", "", 502, False, ()),
    ("POST", "1.1", "", 413, True, ()),
]


@pytest.mark.parametrize("via", ["send", "prepare"])
@pytest.mark.parametrize(
    ("method", "version", "connection", "status", "force", "extra"), EDGE_CASES
)
async def test_an_edge_answer_is_what_aiohttp_sends_for_the_same_response(
    via: str,
    method: str,
    version: str,
    connection: str,
    status: int,
    force: bool,
    extra: tuple[tuple[str, str], ...],
) -> None:
    """A refusal (`RenderedResponse`, one write) against the `web.Response` the stages answered
    refusals with before: the same status line, header lines (order aside), body, closing."""
    build: list[Callable[[], web.StreamResponse]] = []
    counted: list[int] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        exchange = Exchange(request, 0.0, False)
        exchange.request_id = "req-1"
        exchange.extra_headers = list(extra)
        response = build[0]()
        if force:
            response.force_close()
        if via == "send":
            await exchange.send(response)
            counted.append(exchange.bytes_sent)
        else:
            exchange.finalize_headers(response)
        return response

    request = f"{method} /x HTTP/{version}\r\nHost: edge.test\r\n"
    if connection:
        request += f"Connection: {connection}\r\n"
    request += "Content-Length: 0\r\n\r\n" if method == "POST" else "\r\n"
    results = []
    async with RawTestServer(handler) as raw:
        for make in (
            lambda: web.Response(status=status, body=EDGE_BODY, headers=EDGE_HEADERS),
            lambda: RenderedResponse(status, EDGE_BODY, EDGE_HEADERS),
        ):
            build[:] = [make]
            head, body, closed = await exchange_bytes(
                raw.port or 0, request.encode(), method == "HEAD"
            )
            results.append((lines_of(head), body, closed))
    assert results[1] == results[0]
    sent = 0 if method == "HEAD" else len(EDGE_BODY)
    assert counted == ([sent] * 2 if via == "send" else [])
    (status_line, lines), body, closed = results[1]
    assert status_line.split(b" ")[1] == str(status).encode()
    assert b"Retry-After: 7" in lines and b"X-Request-ID: req-1" in lines
    assert body == (b"" if method == "HEAD" else EDGE_BODY)
    assert closed == (force or connection == "close" or (version == "1.0" and not connection))


def _source(function: object) -> str:
    import inspect

    return inspect.getsource(function)  # type: ignore[arg-type]


async def test_a_relayed_answer_keeps_repeated_lines_and_the_origin_s_date_and_server() -> None:
    """The forward stage writes a relayed body that arrived whole as a `RenderedResponse`: the
    origin's header pairs as they came (two Set-Cookie lines stay two), its Date and Server."""
    pairs = [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Date", "Sun, 29 Nov 2020 14:57:09 GMT"),
        ("Server", "origin/1.0"),
    ]

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        exchange = Exchange(request, 0.0, False)
        exchange.request_id = "req-1"
        response = RenderedResponse(201, b"made", pairs, "Made It")
        await exchange.send(response)
        return response

    async with RawTestServer(handler) as raw:
        head, body, closed = await exchange_bytes(
            raw.port or 0, b"GET /x HTTP/1.1\r\nHost: edge.test\r\n\r\n", False
        )
    status_line, lines = lines_of(head)
    assert status_line == b"HTTP/1.1 201 Made It" and body == b"made" and not closed
    assert lines == Counter(
        [
            b"Content-Type: text/plain",
            b"Set-Cookie: a=1",
            b"Set-Cookie: b=2",
            b"Date: Sun, 29 Nov 2020 14:57:09 GMT",
            b"Server: origin/1.0",
            b"Content-Length: 4",
            b"X-Request-ID: req-1",
        ]
    )
