"""Inline answers (pipeline/inline.py, app.py `EdgeRequestHandler.data_received`).

Over real sockets: a request without a body whose chain finishes at once (a HIT) is answered
in the read callback, without an aiohttp request; anything else is handed to aiohttp and
answered by the same chain; order, framing and keep-alive stay exactly as aiohttp's. Then the
mechanism on its own: `start_inline`, `Handover.resume` / `abandon`, and `in_a_task`.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import bundle_factories
import orjson
import pytest
import test_cache_peek
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from fake_transports import CollectingTransport

from openflare import app as app_module
from openflare.app import INLINE_RETRY_AFTER, EdgeRequestHandler, EdgeServer, create_public_server
from openflare.cache.singleflight import SingleFlight
from openflare.config.loader import ConfigBundle
from openflare.config.models import (
    CacheConfig,
    ProxyConfig,
    RoutingConfig,
    ServerConfig,
    UpstreamConfig,
)
from openflare.deps import Deps
from openflare.handover import HANDOVER, in_a_task
from openflare.observability.logging import LogWriter
from openflare.pipeline.base import Exchange
from openflare.pipeline.inline import Handover, LeanRequest, start_inline
from openflare.runtime import RuntimeHolder, build_runtime

BODY = bytes(range(256)) * 4  # 1 KB
redis_port = test_cache_peek.redis_port  # a real redis-server


@dataclass
class Edge:
    port: int
    server: EdgeServer
    deps: Deps
    log: io.BytesIO
    origin_hits: dict[str, int]
    aiohttp_requests: list[str] = field(default_factory=list)  # paths aiohttp made requests for

    def access_lines(self) -> list[dict[str, Any]]:
        self.deps.log.flush()
        lines = [orjson.loads(line) for line in self.log.getvalue().splitlines() if line]
        return [line for line in lines if line.get("event") == "access"]


async def start_origin(hits: dict[str, int]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.StreamResponse:
        hits[request.path] = hits.get(request.path, 0) + 1
        if request.path.startswith("/slow") or request.path == "/pass/slow":
            await asyncio.sleep(0.5)
        if request.method == "POST":
            return web.Response(text=f"got {len(await request.read())}")
        cache_control = "no-store" if request.path.startswith("/pass") else "public, max-age=3600"
        return web.Response(
            body=BODY,
            content_type="application/octet-stream",
            headers={"Cache-Control": cache_control},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sock = cast(Any, site._server).sockets[0]
    return runner, sock.getsockname()[1]


def bundle_for(
    origin_port: int, server: ServerConfig | None = None, cache: CacheConfig | None = None
) -> ConfigBundle:
    return bundle_factories.config_bundle(
        ProxyConfig(
            server=server or ServerConfig(),
            cache=cache or CacheConfig(),
            upstreams=(UpstreamConfig(name="o", base_url=f"http://127.0.0.1:{origin_port}"),),
            routing=RoutingConfig(default_upstream="o"),
        )
    )


async def run_edge(
    server_config: ServerConfig | None = None, cache: CacheConfig | None = None
) -> AsyncIterator[Edge]:
    hits: dict[str, int] = {}
    origin, origin_port = await start_origin(hits)
    out = io.BytesIO()
    deps = Deps(log=LogWriter(out))
    holder = RuntimeHolder(build_runtime(bundle_for(origin_port, server_config, cache), deps))
    server = create_public_server(holder, deps.metrics)
    made: list[str] = []
    factory = server.request_factory

    def counting_factory(message: Any, *args: Any) -> web.BaseRequest:
        made.append(message.path if hasattr(message, "path") else "?")
        return factory(message, *args)

    server.request_factory = counting_factory  # read by each connection's handler
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = cast(Any, site._server).sockets[0].getsockname()[1]
    try:
        yield Edge(port, server, deps, out, hits, made)
    finally:
        await runner.cleanup()
        await origin.cleanup()
        await deps.close()


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    async for running in run_edge():
        yield running


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader, head: bool = False) -> Answer:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    return Answer(status, headers, body)


def get(path: str, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: edge.test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect(edge: Edge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", edge.port)


def count_inline_tries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the chain is tried inline for, from now on."""
    tried: list[str] = []

    def counting(start: Any, message: Any) -> Any:
        tried.append(message.path)
        return start_inline(start, message)

    monkeypatch.setattr(app_module, "start_inline", counting)
    return tried


async def prime(edge: Edge, *paths: str) -> None:
    reader, writer = await connect(edge)
    for path in paths:
        writer.write(get(path))
        answer = await read_answer(reader)
        assert answer.status == 200 and answer.body == BODY
    writer.close()


async def test_a_hit_is_answered_without_an_aiohttp_request(edge: Edge) -> None:
    await prime(edge, "/static/a.bin")
    assert edge.aiohttp_requests == ["/static/a.bin"]  # the MISS: handed to aiohttp
    reader, writer = await connect(edge)
    ids = set()
    for _ in range(3):
        writer.write(get("/static/a.bin"))
        answer = await read_answer(reader)
        assert answer.status == 200
        assert answer.body == BODY
        assert answer.headers["cache-status"].startswith("OpenFlare; hit")
        assert answer.headers["content-length"] == str(len(BODY))
        ids.add(answer.headers["x-request-id"])
    writer.close()
    assert len(ids) == 3
    assert edge.aiohttp_requests == ["/static/a.bin"]  # the HITs made none
    assert edge.origin_hits == {"/static/a.bin": 1}
    lines = edge.access_lines()
    assert [line["cache"] for line in lines] == ["STORE", "HIT", "HIT", "HIT"]
    assert all(line["status"] == 200 and line["bytes_sent"] == len(BODY) for line in lines)
    assert edge.deps.metrics.in_flight_now == 0


async def test_pipelined_requests_are_answered_in_order(edge: Edge) -> None:
    await prime(edge, "/static/a.bin")
    reader, writer = await connect(edge)
    writer.write(
        get("/static/a.bin")  # HIT, inline
        + get("/static/b.bin")  # MISS: handed over
        + get("/static/a.bin")  # after a handover: aiohttp's queue
        + b"POST /pass/echo HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 5\r\n\r\nhello"
        + get("/static/a.bin", method="HEAD")
        + get("/static/b.bin")  # HIT by now
        + get("/pass/x")  # no-store: to the origin every time
    )
    answers = [await read_answer(reader, head=(i == 4)) for i in range(7)]
    assert [a.status for a in answers] == [200] * 7
    assert [a.body for a in answers] == [BODY, BODY, BODY, b"got 5", b"", BODY, BODY]
    assert answers[4].headers["content-length"] == str(len(BODY))  # HEAD keeps it
    assert "hit" in answers[0].headers["cache-status"]
    assert "fwd=miss" in answers[1].headers["cache-status"]
    assert "hit" in answers[5].headers["cache-status"]
    # one more HIT on the same connection: inline again once aiohttp's queue is empty
    before = len(edge.aiohttp_requests)
    writer.write(get("/static/a.bin"))
    assert (await read_answer(reader)).body == BODY
    assert len(edge.aiohttp_requests) == before
    writer.close()
    assert edge.origin_hits == {
        "/static/a.bin": 1,
        "/static/b.bin": 1,
        "/pass/echo": 1,
        "/pass/x": 1,
    }
    assert edge.deps.metrics.in_flight_now == 0


async def test_a_target_handed_over_and_not_stored_skips_the_inline_try_for_a_while(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass-through target (no-store) is handed over every time: after one such request it
    goes straight to aiohttp for its next INLINE_RETRY_AFTER - 1 requests, then is tried again.
    A MISS that was stored is not remembered (its next request is a HIT, inline)."""
    skips = edge.server.inline_skips
    await prime(edge, "/static/a.bin", "/pass/x")
    assert skips == {"/pass/x": INLINE_RETRY_AFTER}
    tried = count_inline_tries(monkeypatch)
    reader, writer = await connect(edge)
    for left in range(INLINE_RETRY_AFTER - 1, 0, -1):
        writer.write(get("/pass/x"))
        assert (await read_answer(reader)).body == BODY
        assert skips.get("/pass/x", 0) == left
    assert tried == []
    writer.write(get("/pass/x"))  # tried inline again, handed over again
    assert (await read_answer(reader)).body == BODY
    assert tried == ["/pass/x"]
    assert skips == {"/pass/x": INLINE_RETRY_AFTER}
    writer.write(get("/static/a.bin"))
    assert "hit" in (await read_answer(reader)).headers["cache-status"]
    writer.close()
    assert edge.origin_hits == {"/static/a.bin": 1, "/pass/x": INLINE_RETRY_AFTER + 1}
    assert edge.aiohttp_requests.count("/static/a.bin") == 1  # the HIT ran inline


async def test_while_a_skipped_target_is_tried_again_its_other_requests_still_skip(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry is one request: while it waits for the origin, the same target's requests
    on other connections go straight to aiohttp (under load they would all be tried)."""
    skips = edge.server.inline_skips
    skips["/pass/slow"] = 1  # the next request for it is the retry
    tried = count_inline_tries(monkeypatch)
    first = await connect(edge)
    first[1].write(get("/pass/slow"))  # the origin answers after 0.5 s
    await asyncio.sleep(0.1)
    others = [await connect(edge) for _ in range(3)]
    for _, writer in others:
        writer.write(get("/pass/slow"))
    for reader, writer in (first, *others):
        assert (await read_answer(reader)).body == BODY
        writer.close()
    assert tried == ["/pass/slow"]
    assert skips == {"/pass/slow": INLINE_RETRY_AFTER}


async def test_a_retried_target_that_is_now_a_hit_leaves_the_memo(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    skips = edge.server.inline_skips
    await prime(edge, "/static/a.bin")
    skips["/static/a.bin"] = 1
    tried = count_inline_tries(monkeypatch)
    await prime(edge, "/static/a.bin")
    assert tried == ["/static/a.bin"]
    assert skips == {}
    assert edge.aiohttp_requests.count("/static/a.bin") == 1  # the retry ran inline


async def test_a_hit_waits_behind_a_request_aiohttp_is_answering(edge: Edge) -> None:
    """While aiohttp answers a request of the connection, a HIT sent after it is not answered
    inline (it would overtake): it waits in aiohttp's queue; the next HIT runs inline again."""
    await prime(edge, "/static/a.bin")
    reader, writer = await connect(edge)
    writer.write(get("/slow/x"))  # a MISS the origin answers after 0.5 s
    await asyncio.sleep(0.1)
    writer.write(get("/static/a.bin"))
    first = await read_answer(reader)
    second = await read_answer(reader)
    assert "fwd=miss" in first.headers["cache-status"]
    assert "hit" in second.headers["cache-status"]
    assert edge.aiohttp_requests == ["/static/a.bin", "/slow/x", "/static/a.bin"]
    writer.write(get("/static/a.bin"))
    assert "hit" in (await read_answer(reader)).headers["cache-status"]
    assert len(edge.aiohttp_requests) == 3  # inline again
    writer.close()


async def test_a_cache_in_redis_is_never_tried_inline(redis_port: int) -> None:
    """Every lookup would wait for Redis and be handed over: the runtime says so
    (`Runtime.inline`) and requests go to aiohttp directly; HITs come from Redis."""
    cache = CacheConfig(store="redis", redis_url=f"redis://127.0.0.1:{redis_port}/0")
    async for edge in run_edge(cache=cache):
        runtime = edge.server.inline_allowed
        assert runtime() is False
        await prime(edge, "/static/a.bin")
        reader, writer = await connect(edge)
        writer.write(get("/static/a.bin") * 2)
        for _ in range(2):
            answer = await read_answer(reader)
            assert answer.body == BODY
            assert "hit" in answer.headers["cache-status"]
        writer.close()
        assert edge.aiohttp_requests == ["/static/a.bin"] * 3
        assert edge.origin_hits == {"/static/a.bin": 1}


async def test_more_pipelined_hits_than_aiohttp_queues_at_once(edge: Edge) -> None:
    """aiohttp's parser holds back requests past 32 queued ones; inline answers free the
    slots and the held-back requests are parsed and answered too."""
    await prime(edge, "/static/a.bin")
    reader, writer = await connect(edge)
    count = 100
    writer.write(get("/static/a.bin") * count)
    answers = [await read_answer(reader) for _ in range(count)]
    assert all(a.status == 200 and a.body == BODY for a in answers)
    assert len({a.headers["x-request-id"] for a in answers}) == count
    writer.write(get("/static/a.bin"))
    assert (await read_answer(reader)).status == 200
    writer.close()
    assert edge.aiohttp_requests == ["/static/a.bin"]


async def test_a_long_pipeline_in_one_write_is_answered_whole(edge: Edge) -> None:
    """Thousands of small requests in one write (more than fit the stack if each batch of 32
    started the next from inside the previous): every one answered, in order."""
    await prime(edge, "/static/a.bin")
    reader, writer = await connect(edge)
    count = 3000
    writer.write(get("/static/a.bin", method="HEAD") * count + get("/static/a.bin"))
    heads = [await read_answer(reader, head=True) for _ in range(count)]
    assert all(a.status == 200 and a.body == b"" for a in heads)
    assert len({a.headers["x-request-id"] for a in heads}) == count
    assert (await read_answer(reader)).body == BODY
    writer.close()
    assert edge.aiohttp_requests == ["/static/a.bin"]


@pytest.mark.parametrize(
    ("version", "extra", "connection", "closes"),
    [
        ("1.1", (), None, False),
        ("1.1", ("Connection: close",), "close", True),
        ("1.0", (), None, True),
        ("1.0", ("Connection: keep-alive",), "keep-alive", False),
    ],
)
async def test_keep_alive_as_aiohttp_decides_it(
    edge: Edge, version: str, extra: tuple[str, ...], connection: str | None, closes: bool
) -> None:
    await prime(edge, "/static/a.bin")
    reader, writer = await connect(edge)
    writer.write(get("/static/a.bin", *extra, version=version))
    answer = await read_answer(reader)
    assert answer.status == 200 and answer.body == BODY
    assert answer.headers.get("connection") == connection
    assert answer.headers["content-length"] == str(len(BODY))
    if closes:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after the answer
    else:
        writer.write(get("/static/a.bin", *extra, version=version))
        assert (await read_answer(reader)).body == BODY
    writer.close()
    assert edge.aiohttp_requests == ["/static/a.bin"]


async def test_an_idle_connection_closes_after_an_inline_answer() -> None:
    async for edge in run_edge(ServerConfig(idle_timeout_ms=200)):
        await prime(edge, "/static/a.bin")
        reader, writer = await connect(edge)
        writer.write(get("/static/a.bin"))
        assert (await read_answer(reader)).body == BODY
        # keep-alive timer armed by the inline answer: the server closes the idle connection
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


async def test_refusals_are_answered_inline_and_parser_errors_by_aiohttp(edge: Edge) -> None:
    """The edge's own refusals are written in one call like a HIT (RenderedResponse), so they
    finish inline; a request the parser rejects never reaches the chain."""
    await prime(edge, "/static/a.bin")
    reader, writer = await connect(edge)
    writer.write(get("/static/a%00.bin") + get("/static/a.bin"))  # encoded NUL: 400
    refused = await read_answer(reader)
    assert refused.status == 400 and b"request_id: " in refused.body
    assert refused.headers["cache-control"] == "no-store"
    assert "x-request-id" in refused.headers and "connection" not in refused.headers
    assert (await read_answer(reader)).status == 200
    assert edge.aiohttp_requests == ["/static/a.bin"]  # the priming MISS only
    writer.write(get("/static/a.bin", "X-Big: " + "b" * 70_000))  # over max_header_bytes
    too_big = await read_answer(reader)
    assert too_big.status == 431 and too_big.headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the refusal
    assert edge.aiohttp_requests == ["/static/a.bin"]
    reader, writer = await connect(edge)
    writer.write(b"GET /x HTTP/1.1\r\nHost: edge.test\r\nBad Header\r\n\r\n")
    assert (await read_answer(reader)).status == 400  # parser error: aiohttp's queue
    writer.close()
    lines = edge.access_lines()
    assert [line["status"] for line in lines] == [200, 400, 200, 431]


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_a_client_that_does_not_read_is_served_by_aiohttp(edge: Edge) -> None:
    """With the transport's writing paused, nothing more is written inline: requests queue in
    aiohttp (which pauses reading past 32) and wait for the client like any other."""
    await prime(edge, "/static/a.bin")
    protocol = cast(EdgeRequestHandler, edge.server())
    transport = CollectingTransport()
    protocol.connection_made(transport)
    await asyncio.sleep(0)  # start() parks on its waiter
    protocol.data_received(get("/static/a.bin"))
    assert transport.out.count(b"HTTP/1.1 200 OK") == 1  # inline
    protocol.pause_writing()
    protocol.data_received(get("/static/a.bin"))
    await asyncio.sleep(0.05)
    assert transport.out.count(b"HTTP/1.1 200 OK") == 2  # written, then waits for the drain
    protocol.data_received(get("/static/a.bin"))
    await asyncio.sleep(0.05)
    assert transport.out.count(b"HTTP/1.1 200 OK") == 2  # queued behind the paused one
    protocol.resume_writing()
    await wait_until(lambda: transport.out.count(b"HTTP/1.1 200 OK") == 3)
    assert edge.aiohttp_requests.count("/static/a.bin") == 3  # the prime, then these two
    protocol.connection_lost(None)


async def test_a_handover_the_connection_never_reached_is_cancelled(edge: Edge) -> None:
    protocol = cast(EdgeRequestHandler, edge.server())
    transport = CollectingTransport()
    protocol.connection_made(transport)
    await asyncio.sleep(0)
    protocol.data_received(get("/slow/x"))  # a MISS: stops at the origin fetch
    assert protocol._handover is not None
    transport.closing = True
    protocol.connection_lost(None)  # before start() got to it
    await wait_until(lambda: edge.deps.metrics.in_flight_now == 0)
    await wait_until(lambda: len(edge.access_lines()) == 1)
    line = edge.access_lines()[0]
    assert line["error"] == "client_disconnected"
    assert edge.aiohttp_requests == []


# --- the mechanism on its own ----------------------------------------------------------------


async def outside_a_task(run: Callable[[], Any]) -> Any:
    """`run()` from a plain loop callback, as `data_received` runs (no current task)."""
    loop = asyncio.get_running_loop()
    result = loop.create_future()
    loop.call_soon(lambda: result.set_result(run()))
    return await result


def exchange() -> Exchange:
    return Exchange(make_mocked_request("GET", "/"), 0.0, False, "127.0.0.1")


async def test_a_chain_that_finishes_returns_its_response() -> None:
    response = web.Response(text="done")
    await response.prepare(make_mocked_request("GET", "/"))  # sent, as stages send answers

    async def chain() -> web.StreamResponse:
        return response

    assert (
        await outside_a_task(lambda: start_inline(lambda: (exchange(), chain()), object()))
        is response
    )


async def test_an_answer_finished_inline_but_not_sent_is_sent_by_aiohttp() -> None:
    response = web.Response(text="not sent")

    async def chain() -> web.StreamResponse:
        return response

    outcome = await outside_a_task(lambda: start_inline(lambda: (exchange(), chain()), object()))
    assert isinstance(outcome, Handover)
    assert await outcome.resume(make_mocked_request("GET", "/")) is response


async def test_a_chain_that_waits_continues_in_a_task_with_the_full_request() -> None:
    loop = asyncio.get_running_loop()
    ex = exchange()
    message = object()
    future: asyncio.Future[str] = loop.create_future()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    seen: list[Any] = []

    async def chain() -> web.StreamResponse:
        var.set("inline")
        seen.append(asyncio.current_task())
        seen.append(await future)
        await asyncio.sleep(0)  # a bare yield
        await HANDOVER  # in a task by now: goes straight on
        seen.append((asyncio.current_task() is not None, var.get(), ex.request))
        return web.Response(text="late")

    outcome = await outside_a_task(lambda: start_inline(lambda: (ex, chain()), message))
    assert isinstance(outcome, Handover) and outcome.message is message
    assert seen == [None]
    full = make_mocked_request("GET", "/")
    resumed = outcome.resume(full)
    future.set_result("value")
    response = await resumed
    assert cast(web.Response, response).text == "late"
    assert seen[1] == "value"
    assert seen[2] == (True, "inline", full)
    assert var.get(None) is None  # the inline run's context did not leak here


async def test_a_miss_is_the_leader_before_it_is_handed_over() -> None:
    """Leader or waiter is decided in the same inline step as the cache lookup: a request
    handed over in between could find the leader done and gone, and fetch a second time
    (the E2E collapsing test caught that). A second MISS in that step waits for the leader."""
    loop = asyncio.get_running_loop()
    flights: SingleFlight[str] = SingleFlight()
    gate: asyncio.Future[str] = loop.create_future()
    fetches = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        return await gate

    async def chain() -> web.StreamResponse:
        result, leader = await flights.join("k", fetch, 5.0)
        return web.Response(text=f"{result} {leader}")

    first = await outside_a_task(lambda: start_inline(lambda: (exchange(), chain()), object()))
    assert isinstance(first, Handover)
    assert flights.in_flight("k")  # the leader is registered before the handover
    second = await outside_a_task(lambda: start_inline(lambda: (exchange(), chain()), object()))
    assert isinstance(second, Handover)
    gate.set_result("body")
    answers = [
        await handover.resume(make_mocked_request("GET", "/")) for handover in (first, second)
    ]
    assert [cast(web.Response, a).text for a in answers] == ["body True", "body False"]
    assert fetches == 1


async def test_a_chain_that_raises_inline_raises_in_the_handler() -> None:
    async def chain() -> web.StreamResponse:
        raise ValueError("boom")

    outcome = await outside_a_task(lambda: start_inline(lambda: (exchange(), chain()), object()))
    assert isinstance(outcome, Handover)
    with pytest.raises(ValueError, match="boom"):
        outcome.resume(make_mocked_request("GET", "/"))


async def test_a_front_stage_that_raises_before_any_await_raises_in_the_handler() -> None:
    """The plain-`def` stages at the front run when the chain is built: an error there is
    aiohttp's to answer (500) too, not the read callback's."""

    def start() -> tuple[Exchange, Any]:
        raise LookupError("front stage")

    outcome = await outside_a_task(lambda: start_inline(start, object()))
    assert isinstance(outcome, Handover)
    with pytest.raises(LookupError, match="front stage"):
        outcome.resume(make_mocked_request("GET", "/"))


async def test_cancelling_the_handler_cancels_the_chain_where_it_waits() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    cleaned: list[str] = []

    async def chain() -> web.StreamResponse:
        try:
            await never
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            await asyncio.sleep(0)  # a finally block may still wait
            raise
        return web.Response()

    outcome = await outside_a_task(lambda: start_inline(lambda: (exchange(), chain()), object()))
    assert isinstance(outcome, Handover)
    resumed = outcome.resume(make_mocked_request("GET", "/"))

    async def handler() -> web.StreamResponse:  # as aiohttp's handler task awaits it
        return await resumed

    task = asyncio.get_running_loop().create_task(handler())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cancelled"]
    assert never.cancelled()


async def test_abandon_runs_the_chain_s_cleanup() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    async def chain() -> web.StreamResponse:
        try:
            await loop.create_future()
        finally:
            done.set_result("finally ran")
        return web.Response()

    outcome = await outside_a_task(lambda: start_inline(lambda: (exchange(), chain()), object()))
    assert isinstance(outcome, Handover)
    outcome.abandon()
    assert await asyncio.wait_for(done, 10) == "finally ran"


async def test_in_a_task_hands_an_inline_run_over_and_is_free_in_a_task() -> None:
    async def chain() -> web.StreamResponse:
        await in_a_task()
        return web.Response(text=str(asyncio.current_task() is not None))

    outcome = await outside_a_task(lambda: start_inline(lambda: (exchange(), chain()), object()))
    assert isinstance(outcome, Handover)  # stopped before anything that needs a task
    response = await outcome.resume(make_mocked_request("GET", "/"))
    assert cast(web.Response, response).text == "True"
    # in a task it does not stop at all
    task_answer: list[Any] = []

    async def in_task() -> None:
        task_answer.append(await chain())

    await asyncio.get_running_loop().create_task(in_task())
    assert cast(web.Response, task_answer[0]).text == "True"


async def test_full_request_outside_its_handler_is_an_error() -> None:
    """A background task holding an exchange that was answered inline never gets aiohttp's
    request; asking for it fails loudly instead of waiting forever."""

    message = SimpleNamespace(
        method="GET", path="/", version=(1, 1), headers={}, raw_headers=(), should_close=False
    )
    protocol = cast(Any, type("Protocol", (), {"transport": None})())
    lean = LeanRequest(message, protocol, cast(Any, None), "http")
    ex = Exchange(lean, 0.0, False, "127.0.0.1")
    with pytest.raises(RuntimeError, match="only reachable from its handler"):
        await ex.full_request()
