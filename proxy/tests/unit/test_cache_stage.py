"""The cache stage against a real origin (an aiohttp test server): bodies in flight reserved
against `max_bytes`, `bypass_on_authorization`, and the `cache.lookup` / `cache.store` child
spans when tracing is on."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import bundle_factories
import pytest
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import TestServer, make_mocked_request
from cache_factories import entry as cache_entry
from fake_transports import CollectingTransport
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openflare.cache.entry import CacheEntry
from openflare.cache.rules import CacheRules
from openflare.cache.storage.memory import MemoryStore
from openflare.config.loader import ConfigBundle
from openflare.config.models import CacheConfig, ProxyConfig, TracingConfig, UpstreamConfig
from openflare.deps import Deps
from openflare.observability import tracing
from openflare.observability.logging import LogWriter
from openflare.observability.tracing import Tracing, resolve_settings
from openflare.pipeline import cache
from openflare.pipeline.base import Exchange
from openflare.pipeline.forward import build_client
from openflare.pipeline.stored_response import StoredResponse
from openflare.routing import Route

CHUNK = 64 * 1024


@dataclass
class Gate:
    """Lets the test look at the proxy while the origin is half-way through a body."""

    first_sent: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)


async def origin_app(gate: Gate) -> web.Application:
    async def gated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "public, max-age=60"})
        if request.query.get("length") == "1":
            response.content_length = 2 * CHUNK
        await response.prepare(request)
        await response.write(b"a" * CHUNK)
        gate.first_sent.set()
        await gate.go.wait()
        await response.write(b"b" * CHUNK)
        await response.write_eof()
        return response

    async def custom(request: web.Request) -> web.Response:
        size = int(request.query.get("size", "10"))
        return web.Response(
            body=b"x" * size, headers={"Cache-Control": request.query.get("cc", "max-age=60")}
        )

    app = web.Application()
    app.router.add_get("/gated", gated)
    app.router.add_get("/custom", custom)
    return app


@pytest.fixture
async def origin() -> AsyncIterator[tuple[TestServer, Gate]]:
    gate = Gate()
    server = TestServer(await origin_app(gate), host="127.0.0.1")
    await server.start_server()
    yield server, gate
    gate.go.set()  # a failed test must not leave the origin waiting
    await server.close()


def bundle_for(
    server: TestServer, cache_config: dict[str, Any] | None = None, rules: Any = None
) -> ConfigBundle:
    return bundle_factories.config_bundle(
        ProxyConfig(
            upstreams=(UpstreamConfig(name="o", base_url=str(server.make_url("")).rstrip("/")),),
            cache=CacheConfig(**(cache_config or {})),
        ),
        cache_rules=CacheRules.model_validate(rules or {}),
    )


def exchange_for(target: str, headers: dict[str, str] | None = None) -> Exchange:
    loop = asyncio.get_running_loop()
    protocol = aiohttp.client_proto.ResponseHandler(loop)
    protocol.transport = CollectingTransport()
    request = make_mocked_request(
        "GET",
        target,
        headers={"Host": "edge.test", **(headers or {})},
        writer=StreamWriter(protocol, loop),
    )
    exchange = Exchange(request, 0.0, True)
    path, _, query = target.partition("?")
    exchange.path = path
    exchange.query = query
    exchange.request_id = "req-1"
    exchange.route = Route("r", "o", "/")
    return exchange


class Forwarded:
    """The rest of the chain: counts the requests the cache stage passed on."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, exchange: Exchange) -> web.StreamResponse:
        self.count += 1
        return web.Response(text="forwarded")


def stored_entry(key: str, size: int) -> CacheEntry:
    return cache_entry(
        key, body=b"o" * size, request_time=1e10, response_time=1e10, auth_shareable=False
    )


async def wait_for(condition: Any) -> None:
    """Until `condition()` holds (a bounded wait on what the event loop does, not a timing)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (state of another task, not an event)
            await asyncio.sleep(0.005)


# --- bodies in flight count against max_bytes ----------------------------------------------------


@pytest.mark.parametrize("known_length", [True, False], ids=["content-length", "chunked"])
async def test_a_body_in_flight_is_reserved_against_max_bytes_then_released(
    origin: tuple[TestServer, Gate], known_length: bool
) -> None:
    server, gate = origin
    max_bytes = 4 * CHUNK
    deps = Deps(log=LogWriter(io.BytesIO()))
    stage = cache.build(bundle_for(server, {"max_bytes": max_bytes}), deps)
    assert stage is not None
    store = stage.store
    assert isinstance(store, MemoryStore)
    for i in range(3):  # nearly full before the fetch starts
        await store.put(stored_entry(f"http://old/{i}", CHUNK))
    assert (await store.stats()).entries == 3
    target = "/gated?length=1" if known_length else "/gated"
    exchange = exchange_for(target)
    answer = asyncio.create_task(stage(exchange, Forwarded()))
    await gate.first_sent.wait()
    await wait_for(lambda: store.reserved_bytes >= CHUNK)
    if known_length:
        assert store.reserved_bytes == 2 * CHUNK  # the whole announced body, up front
    assert store.size_bytes + store.reserved_bytes <= max_bytes
    assert (await store.stats()).size_bytes == store.size_bytes + store.reserved_bytes
    assert store.evictions >= 1  # the oldest entries made room for the body in flight
    gate.go.set()
    response = await answer
    assert exchange.cache_status == "STORE"
    assert isinstance(response, StoredResponse) and response.body == b"a" * CHUNK + b"b" * CHUNK
    assert store.reserved_bytes == 0
    assert await store.get(f"http://edge.test{target}") is not None
    assert store.size_bytes == sum(e.size for e in store._entries.values()) <= max_bytes
    await deps.close()


async def test_a_body_larger_than_the_room_for_bodies_in_flight_streams_through(
    origin: tuple[TestServer, Gate],
) -> None:
    server, _ = origin
    deps = Deps(log=LogWriter(io.BytesIO()))
    stage = cache.build(bundle_for(server, {"max_bytes": 50_000}), deps)
    assert stage is not None
    exchange = exchange_for("/custom?size=80000&cc=max-age%3D60")
    await stage(exchange, Forwarded())
    assert exchange.cache_status == "MISS"
    assert ("Cache-Status", "OpenFlare; fwd=miss; detail=no-room") in (exchange.extra_headers or [])
    assert isinstance(stage.store, MemoryStore) and stage.store.reserved_bytes == 0
    assert (await stage.store.stats()).entries == 0
    await deps.close()


# --- bypass_on_authorization --------------------------------------------------------------------

AUTH = {"Authorization": "Bearer user-token"}


@pytest.mark.parametrize(
    ("global_setting", "rule_setting", "bypassed"),
    [
        (None, None, False),  # default: RFC 9111 §3.5 decides per response
        (False, None, False),
        (True, None, True),  # Varnish's builtin VCL: every credentialed request passes
        (True, False, False),  # a rule may opt back into RFC 9111 §3.5
        (False, True, True),
    ],
)
async def test_bypass_on_authorization(
    origin: tuple[TestServer, Gate],
    global_setting: bool | None,
    rule_setting: bool | None,
    bypassed: bool,
) -> None:
    server, _ = origin
    config = {} if global_setting is None else {"bypass_on_authorization": global_setting}
    decision: dict[str, Any] = {}
    if rule_setting is not None:
        decision["bypass_on_authorization"] = rule_setting
    rules = {"rules": [{"id": "all", "path_prefix": "/", "cache": decision}]}
    deps = Deps(log=LogWriter(io.BytesIO()))
    stage = cache.build(bundle_for(server, config, rules), deps)
    assert stage is not None
    forwarded = Forwarded()
    target = "/custom?size=10&cc=public,%20max-age%3D60"
    first = exchange_for(target, AUTH)
    await stage(first, forwarded)
    second = exchange_for(target, AUTH)
    await stage(second, forwarded)
    anonymous = exchange_for(target)
    await stage(anonymous, forwarded)
    if bypassed:
        assert [first.cache_status, second.cache_status] == ["BYPASS", "BYPASS"]
        assert forwarded.count == 2  # never looked up, never stored
        assert anonymous.cache_status == "STORE"
    else:
        # `public` allows a shared cache to store and reuse it for credentialed requests
        assert [first.cache_status, second.cache_status] == ["STORE", "HIT"]
        assert forwarded.count == 0
        assert anonymous.cache_status == "HIT"
    await deps.close()


async def test_rfc_9111_authorization_rule_still_applies_without_bypass(
    origin: tuple[TestServer, Gate],
) -> None:
    server, _ = origin
    deps = Deps(log=LogWriter(io.BytesIO()))
    stage = cache.build(bundle_for(server), deps)
    assert stage is not None
    target = "/custom?size=10&cc=max-age%3D60"  # no public / s-maxage / must-revalidate
    credentialed = exchange_for(target, AUTH)
    await stage(credentialed, Forwarded())
    assert credentialed.cache_status == "MISS"
    assert ("Cache-Status", "OpenFlare; fwd=miss; detail=authorization") in (
        credentialed.extra_headers or []
    )
    await deps.close()


# --- tracing: cache.lookup and cache.store child spans -------------------------------------------


@pytest.fixture
def memory_tracing() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    traced = Tracing(resolve_settings(TracingConfig(enabled=True), {}))
    exporter = InMemorySpanExporter()
    traced.provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield traced, exporter
    traced.provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_cache_lookup_and_store_spans(
    origin: tuple[TestServer, Gate], memory_tracing: tuple[Tracing, InMemorySpanExporter]
) -> None:
    server, _ = origin
    traced, exporter = memory_tracing
    deps = Deps(log=LogWriter(io.BytesIO()))
    bundle = bundle_for(server)
    stage = cache.TracedCacheStage(bundle, deps, build_client(bundle, deps), traced.tracer)
    stored_target = "/custom?size=10&cc=max-age%3D60"
    private_target = "/custom?size=10&cc=private"
    root = traced.tracer.start_span("cache")
    with trace.use_span(root, end_on_exit=True):
        for target in (stored_target, stored_target, private_target):
            await stage(exchange_for(target), Forwarded())
    spans = exporter.get_finished_spans()
    children = [span for span in spans if span.name != "cache"]
    assert all(
        span.parent is not None and span.parent.span_id == root.get_span_context().span_id
        for span in children
    )
    assert [span.name for span in children] == [
        "cache.lookup",  # miss
        "cache.store",  # stored
        "cache.lookup",  # hit: nothing stored
        "cache.lookup",  # private: not stored
        "cache.store",
    ]
    miss, stored, hit, private_lookup, private_store = (attributes(s) for s in children)
    key = cache.key_hash("http://edge.test/custom?cc=max-age%3D60&size=10")
    assert miss == {
        "openflare.cache.key_hash": key,
        "openflare.cache.store": "memory",
        "openflare.cache.lookup.result": "absent",
    }
    assert stored["openflare.cache.store.decision"] == "stored"
    assert stored["openflare.cache.store.reason"] == "max-age"
    assert stored["openflare.cache.key_hash"] == key and stored["openflare.cache.store.bytes"] > 10
    assert hit["openflare.cache.lookup.result"] == "found"
    assert hit["openflare.cache.entry.age"] >= 0
    assert private_lookup["openflare.cache.lookup.result"] == "absent"
    assert private_store["openflare.cache.store.decision"] == "not-stored"
    assert private_store["openflare.cache.store.reason"] == "private"
    assert len(key) == 16 and "edge.test" not in str(stored)  # never the raw URL
    await deps.close()


async def test_tracing_off_builds_the_plain_stage(
    origin: tuple[TestServer, Gate], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = origin
    for name in list(tracing.os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    deps = Deps(log=LogWriter(io.BytesIO()))
    bundle = bundle_for(server)
    stage = cache.build(bundle, deps)
    assert type(stage) is cache.CacheStage  # no span code on the request path
    assert stage._client is build_client(bundle, deps)  # the forward stage's client
    await deps.close()
