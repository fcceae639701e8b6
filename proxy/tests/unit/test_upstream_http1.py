"""The lean HTTP/1.1 upstream client (upstream/http1.py) against scripted origins: request
serialization, framing, keep-alive reuse, timeouts, truncation, the stale-connection retry, the
pool limit and gauges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from unittest import mock

import aiohttp
import pytest
from aiohttp.http_exceptions import HttpProcessingError

from openflare.config.models import UpstreamConfig
from openflare.upstream.http1 import ConnectFailed, Http1Pool, Origin, lean_origin
from openflare.upstream.pool import UpstreamPool

Answer = Callable[[bytes], bytes | None]  # request head → raw answer (None: close at once)


class ScriptedOrigin:
    """Answers each request head with `answer(head)`; records heads and connections."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after  # close the connection after each answer
        self.heads: list[bytes] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                raw = self.answer(head)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def origin_server(
    answer: Answer, close_after: bool = False
) -> AsyncIterator[tuple[ScriptedOrigin, Origin]]:
    scripted = ScriptedOrigin(answer, close_after)
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield scripted, Origin(f"http://127.0.0.1:{port}")
    finally:
        for writer in scripted.writers:
            writer.close()
        server.close()


def pool(limit: int = 0, total: float | None = None) -> Http1Pool:
    return Http1Pool(limit=limit, limit_per_host=0, connect_timeout=2.0, total_timeout=total)


def ok(body: bytes = b"hello", extra: str = "") -> Answer:
    def answer(head: bytes) -> bytes:
        payload = b"" if head.startswith(b"HEAD") else body
        return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + payload

    return answer


def head_for(method: str, origin: Origin, headers: list[tuple[str, str]]) -> bytes:
    return origin.request_head(method, "/p?q=1", headers)


# --- serialization ------------------------------------------------------------------------------


def test_request_head_like_aiohttp() -> None:
    origin = Origin("http://origin.test:8080/base")
    assert origin.request_head("GET", "/a%20b?x=1", [("X-A", "1")]) == (
        b"GET /base/a%20b?x=1 HTTP/1.1\r\nHost: origin.test:8080\r\nX-A: 1\r\n\r\n"
    )
    assert origin.request_head("GET", "/", [("Host", "client.test"), ("X-A", "1")]) == (
        b"GET /base/ HTTP/1.1\r\nHost: client.test\r\nX-A: 1\r\n\r\n"
    )
    # a body-less DELETE says so, as aiohttp does; a GET does not
    assert origin.request_head("DELETE", "/", [("Host", "h")]).endswith(
        b"Host: h\r\nContent-Length: 0\r\n\r\n"
    )
    assert Origin("http://h").request_head("GET", "/", []) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    # the client's own length (and a name that only ends in "host") are not mistaken
    assert Origin("http://h").request_head(
        "POST", "/", [("X-Host", "a"), ("content-length", "0")]
    ) == (b"POST / HTTP/1.1\r\nHost: h\r\nX-Host: a\r\ncontent-length: 0\r\n\r\n")


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\r\n"])
def test_request_head_refuses_line_breaks(value: str) -> None:
    with pytest.raises(ValueError, match="newline"):
        Origin("http://h").request_head("GET", "/", [("X-A", value)])
    with pytest.raises(ValueError, match="newline"):
        Origin("http://h").request_head("GET", "/", [("X-A", "1"), ("X-B", value), ("X-C", "")])
    with pytest.raises(ValueError, match="newline"):
        Origin("http://h").request_head("GET", "/" + value, [])


@pytest.mark.parametrize(
    "url", ["https://h", "http://user:secret@h", "http://bücher.test", "http://h:99999"]
)
def test_targets_left_to_the_session(url: str) -> None:
    assert lean_origin(url) is None
    ipv6 = lean_origin("http://[::1]:8080/p")
    assert ipv6 is not None
    assert (ipv6.host, ipv6.host_header, ipv6.path_prefix) == ("::1", "[::1]:8080", "/p")


# --- framing and reuse --------------------------------------------------------------------------


async def test_keep_alive_connection_is_reused_once_the_body_was_read() -> None:
    async with origin_server(ok(b"x" * 1000)) as (scripted, origin):
        client = pool()
        for _ in range(3):
            response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
            assert response.status == 200
            assert response.content_length == 1000
            assert await response.content.read() == b"x" * 1000
            response.release()
            assert client.connections_in_use() == 0
            assert client.connections_idle() == 1
        assert scripted.connections == 1
        assert scripted.heads[0].startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        client.close()
        assert client.connections_idle() == 0


async def test_unread_body_or_connection_close_is_never_reused() -> None:
    async with origin_server(ok(b"x" * 200_000)) as (scripted, origin):
        client = pool()
        response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        assert client.connections_in_use() == 1
        response.release()  # body not read: the connection cannot carry another request
        assert (client.connections_in_use(), client.connections_idle()) == (0, 0)
        response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        await response.content.read()
        response.release()
        assert scripted.connections == 2
        client.close()
    async with origin_server(ok(extra="Connection: close\r\n")) as (scripted, origin):
        client = pool()
        for _ in range(2):
            response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
            assert await response.content.read() == b"hello"
            response.release()
            assert client.connections_idle() == 0
        assert scripted.connections == 2
        client.close()


async def test_chunked_close_delimited_and_bodyless_responses() -> None:
    answers = {
        b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"/204": b"HTTP/1.1 204 No Content\r\n\r\n",
        b"/304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"/early": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    }

    def answer(head: bytes) -> bytes:
        path = head.split(b" ")[1]
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        return answers[path]

    async with origin_server(answer) as (scripted, origin):
        client = pool()
        for method, path, status, body in [
            ("GET", "/chunked", 200, b"abcde"),
            ("GET", "/204", 204, b""),
            ("GET", "/304", 304, b""),
            ("HEAD", "/any", 200, b""),
            ("GET", "/early", 200, b"hi"),  # the interim 100 is skipped
        ]:
            head = origin.request_head(method, path, [])
            response = await client.send(origin, method, head, 5.0)
            assert (response.status, await response.content.read()) == (status, body), path
            response.release()
        assert scripted.connections == 1  # every one of them left the connection reusable
        client.close()

    async with origin_server(
        lambda head: b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True
    ) as (_, origin):
        client = pool()
        response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        assert await response.content.read() == b"until the end"
        response.release()
        assert client.connections_idle() == 0
        client.close()


async def test_truncated_body_is_an_error_for_the_reader() -> None:
    async with origin_server(
        lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close_after=True
    ) as (_, origin):
        client = pool()
        response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        with pytest.raises(aiohttp.ClientPayloadError):
            async for _ in response.content.iter_any():
                pass
        response.close()
        assert (client.connections_in_use(), client.connections_idle()) == (0, 0)
        client.close()


async def test_invalid_response_is_a_protocol_error() -> None:
    async with origin_server(lambda head: b"NOT HTTP AT ALL\r\n\r\n") as (_, origin):
        client = pool()
        with pytest.raises(HttpProcessingError):
            await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        assert client.connections_in_use() == 0
        client.close()


# --- failures and timeouts ------------------------------------------------------------------


async def test_connection_refused() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    origin = Origin(f"http://127.0.0.1:{port}")
    client = pool()
    with pytest.raises(ConnectFailed):
        await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
    assert client.connections_in_use() == 0


async def test_time_to_first_byte_timeout_closes_the_connection() -> None:
    async with origin_server(lambda head: b"") as (scripted, origin):  # never answers
        client = pool()
        with pytest.raises(TimeoutError):
            await client.send(origin, "GET", head_for("GET", origin, []), 0.05)
        assert (client.connections_in_use(), client.connections_idle()) == (0, 0)
        assert scripted.connections == 1
        client.close()


async def test_total_timeout_cuts_a_body_that_never_ends() -> None:
    async with origin_server(
        lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstart"
    ) as (_, origin):
        client = pool(total=0.1)
        response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        with pytest.raises(TimeoutError):
            async for _ in response.content.iter_any():
                pass
        assert (client.connections_in_use(), client.connections_idle()) == (0, 0)
        client.close()


async def test_idle_connection_closed_by_the_origin_is_replaced() -> None:
    async with origin_server(ok()) as (scripted, origin):
        client = pool()
        response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        await response.content.read()
        response.release()
        assert client.connections_idle() == 1
        for writer in scripted.writers:  # the origin's keep-alive timeout
            writer.transport.abort()
        await asyncio.sleep(0.05)
        response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        assert await response.content.read() == b"hello"
        response.release()
        assert scripted.connections == 2
        client.close()


async def test_stale_connection_is_retried_once_for_idempotent_methods() -> None:
    """The origin closes a reused connection without answering: a GET goes out again on a new
    connection, a body-less POST does not."""
    answered: list[bytes] = []

    def answer(head: bytes) -> bytes | None:
        answered.append(head)
        if len(answered) == 2:
            return None  # closes the (reused) connection without a word
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async with origin_server(answer) as (scripted, origin):
        client = pool()
        for _ in range(2):
            response = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
            assert await response.content.read() == b"ok"
            response.release()
        assert (len(answered), scripted.connections) == (3, 2)
        answered.clear()
        answered.append(b"")  # the next request is the second one: dropped
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.send(origin, "POST", head_for("POST", origin, []), 5.0)
        client.close()


async def test_pool_limit_makes_requests_wait_for_a_free_connection() -> None:
    async with origin_server(ok(b"x" * 200_000)) as (scripted, origin):
        client = pool(limit=1)
        first = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        second = asyncio.ensure_future(client.send(origin, "GET", head_for("GET", origin, []), 5.0))
        await asyncio.sleep(0.05)
        assert not second.done()
        assert client.connections_in_use() == 1
        await first.content.read()
        first.release()
        response = await second
        assert len(await response.content.read()) == 200_000
        response.release()
        assert scripted.connections == 1
        # nothing frees a connection in time: the wait counts against the header timeout
        held = await client.send(origin, "GET", head_for("GET", origin, []), 5.0)
        with pytest.raises(TimeoutError):
            await client.send(origin, "GET", head_for("GET", origin, []), 0.05)
        held.close()
        client.close()


async def test_failed_connect_gives_its_slot_back() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    refused = Origin(f"http://127.0.0.1:{port}")
    client = pool(limit=1)
    with pytest.raises(ConnectFailed):
        await client.send(refused, "GET", head_for("GET", refused, []), 5.0)
    async with origin_server(ok()) as (_, origin):
        response = await client.send(origin, "GET", head_for("GET", origin, []), 0.5)
        assert await response.content.read() == b"hello"
        response.release()
        client.close()


# --- which client a pool uses ---------------------------------------------------------------


async def test_pool_uses_the_lean_client_only_without_tracing_and_for_http_targets() -> None:
    plain = UpstreamConfig(name="o", targets=("http://a", "http://b:8080/x"))
    pool_ = UpstreamPool(plain)
    assert pool_.http1 is not None
    assert [t.origin.key for t in pool_.targets.targets if t.origin] == [("a", 80), ("b", 8080)]
    await pool_.close()
    tracing = mock.Mock()
    tracing.upstream_trace_config.return_value = aiohttp.TraceConfig()
    traced = UpstreamPool(plain, tracing)
    assert traced.http1 is None  # the session carries the OpenTelemetry instrumentation
    await traced.close()
    mixed = UpstreamPool(UpstreamConfig(name="o", targets=("http://a", "https://b")))
    assert mixed.http1 is None
    await mixed.close()
