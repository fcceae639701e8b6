"""The shortcuts of the per-request path give the answers of the long way: stages linked by
`compose` (plain-`def` stages included), the normalize stage's memo of accepted targets and
valid hosts, the access-log timestamp shared within a millisecond, the peer address kept per
connection, and the parser fallback handing its final parser to the connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_parser import HttpRequestParser, HttpRequestParserPy
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from openflare.app import MethodFallbackParser
from openflare.config.models import NormalizationConfig
from openflare.observability import logging as json_logging
from openflare.observability.metrics import Metrics
from openflare.pipeline import normalize
from openflare.pipeline.base import Exchange, Handler, answered, compose
from openflare.pipeline.normalize import NormalizeStage, framing_problem

# --- compose ----------------------------------------------------------------------------------


class Tagging:
    """A plain-`def` stage: notes its name and returns `next(exchange)` unawaited."""

    def __init__(self, name: str, seen: list[str], refuse: bool = False) -> None:
        self.name, self.seen, self.refuse = name, seen, refuse

    def __call__(self, exchange: Exchange, next: Handler) -> Awaitable[web.StreamResponse]:
        self.seen.append(self.name)
        if self.refuse:
            return answered(web.Response(status=418))
        return next(exchange)


class Around:
    """An `async def` stage that sees what comes back, or what is raised."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        self.seen.append("around:in")
        try:
            response = await next(exchange)
        except RuntimeError:
            self.seen.append("around:caught")
            return web.Response(status=500)
        self.seen.append(f"around:out:{response.status}")
        return response


class Exploding:
    def __call__(self, exchange: Exchange, next: Handler) -> Awaitable[web.StreamResponse]:
        raise RuntimeError("boom")  # raised when called, not when awaited


def exchange_for(target: str = "/", headers: dict[str, str] | None = None) -> Exchange:
    request = make_mocked_request("GET", target, headers={"Host": "a.test", **(headers or {})})
    return Exchange(request, time.monotonic(), False)


async def terminal(exchange: Exchange) -> web.StreamResponse:
    return web.Response(status=299)


async def test_compose_runs_stages_in_order_and_sees_the_answer_on_the_way_out() -> None:
    seen: list[str] = []
    handler = compose([Tagging("a", seen), Around(seen), Tagging("b", seen)], terminal)
    response = await handler(exchange_for())
    assert response.status == 299
    assert seen == ["a", "around:in", "b", "around:out:299"]


async def test_a_plain_stage_may_answer_and_the_rest_never_runs() -> None:
    seen: list[str] = []
    handler = compose([Around(seen), Tagging("a", seen, refuse=True), Tagging("b", seen)], terminal)
    response = await handler(exchange_for())
    assert response.status == 418
    assert seen == ["around:in", "a", "around:out:418"]


async def test_an_exception_of_a_plain_stage_reaches_the_async_stage_around_it() -> None:
    seen: list[str] = []
    handler = compose([Around(seen), Tagging("a", seen), Exploding()], terminal)
    response = await handler(exchange_for())
    assert response.status == 500
    assert seen == ["around:in", "a", "around:caught"]


def test_a_composed_chain_returns_a_coroutine() -> None:
    """aiohttp and `asyncio.run` need a coroutine, which a chain of plain stages passes on."""
    handler = compose([Tagging("a", []), Tagging("b", [])], terminal)
    assert asyncio.run(handler(exchange_for())).status == 299  # type: ignore[arg-type]


# --- normalize: memo of accepted targets and valid hosts ---------------------------------------


def stage() -> NormalizeStage:
    return NormalizeStage(NormalizationConfig(), Metrics())


async def run(stage: NormalizeStage, exchange: Exchange) -> tuple[int, Exchange]:
    exchange.host = exchange.request.headers.get("Host", "")
    response = await stage(exchange, terminal)
    return response.status, exchange


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a/b", "/a/b", ""),
        ("/a/./b/../c?x=1&y=%41", "/a/c", "x=1&y=%41"),
        ("/%7euser//x?", "/~user/x", ""),
    ],
)
async def test_a_repeated_target_gives_the_same_path_and_query(
    target: str, path: str, query: str
) -> None:
    normalizer = stage()
    for _ in range(3):
        status, exchange = await run(normalizer, exchange_for(target))
        assert (status, exchange.path, exchange.query) == (299, path, query)
    assert normalizer._accepted == {target: (path, query)}


@pytest.mark.parametrize(
    ("target", "reason"),
    [("/a/%00", "encoded_nul"), ("/a?b\x01", "control_character"), ("/%zz", "invalid")],
)
async def test_a_refused_target_is_refused_every_time_and_never_remembered(
    target: str, reason: str
) -> None:
    normalizer = stage()
    for _ in range(2):
        status, exchange = await run(normalizer, exchange_for(target))
        assert status == 400
        assert exchange.error.startswith(reason)
    assert normalizer._accepted == {}


async def test_a_query_refusal_still_logs_the_normalized_path() -> None:
    status, exchange = await run(stage(), exchange_for("/a/./b?x\x7f"))
    assert (status, exchange.path, exchange.error) == (400, "/a/b", "control_character")


async def test_the_memo_is_bounded_in_entries_and_key_length() -> None:
    normalizer = stage()
    long_target = "/" + "a" * normalize.MEMO_MAX_TARGET
    status, exchange = await run(normalizer, exchange_for(long_target))
    assert (status, exchange.path) == (299, long_target)
    assert normalizer._accepted == {}
    for i in range(normalize.MEMO_ENTRIES + 10):
        await run(normalizer, exchange_for(f"/p{i}"))
    assert 0 < len(normalizer._accepted) <= normalize.MEMO_ENTRIES
    status, exchange = await run(normalizer, exchange_for("/p0"))
    assert (status, exchange.path) == (299, "/p0")


def test_an_invalid_host_is_refused_every_time_and_a_valid_one_remembered() -> None:
    normalize._valid_hosts.clear()
    bad = CIMultiDict({"Host": "a b"})
    assert framing_problem((1, 1), bad) == (400, "invalid_host")
    assert framing_problem((1, 1), bad) == (400, "invalid_host")
    good = CIMultiDict({"Host": "shop.test:8080"})
    assert framing_problem((1, 1), good) is None
    assert framing_problem((1, 1), good) is None
    assert normalize._valid_hosts == {"shop.test:8080"}
    assert framing_problem((1, 1), CIMultiDict({"Host": "x" * 300})) is None
    assert "x" * 300 not in normalize._valid_hosts  # too long to keep
    # a remembered host still goes through the other checks
    assert framing_problem((1, 1), CIMultiDict([("Host", "shop.test:8080")] * 2)) == (
        400,
        "duplicate_host",
    )


# --- access-log timestamp ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ns",
    [1_764_400_000_000_000_000, 1_764_400_000_999_999_999, 1_764_400_001_000_000_001, 7],
)
def test_timestamp_is_datetime_isoformat_with_milliseconds(
    ns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: ns)
    expected = (
        datetime.fromtimestamp(ns // 1_000_000 / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    assert json_logging.utc_timestamp() == expected
    assert json_logging.utc_timestamp() == expected  # the same millisecond: the kept string


def test_timestamp_moves_on_with_the_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_764_400_000_123_000_000]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    first = json_logging.utc_timestamp()
    now[0] += 1_000_000
    second = json_logging.utc_timestamp()
    now[0] += 1_000_000_000
    third = json_logging.utc_timestamp()
    assert (first[-5:], second[-5:], third[-5:]) == (".123Z", ".124Z", ".124Z")
    assert first[:19] == second[:19] != third[:19]


# --- peer address -------------------------------------------------------------------------


class Transport:
    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (("192.0.2.1", 5000), "192.0.2.1"),
        (("2001:db8::1", 1, 0, 0), "2001:db8::1"),
        ("", "0.0.0.0"),
    ],
)
def test_exchange_asks_the_transport_unless_told_the_peer(peer: Any, expected: str) -> None:
    request = make_mocked_request("GET", "/", transport=Transport(peer))
    exchange = Exchange(request, 0.0, False)
    assert exchange.peer_ip == exchange.client_ip == expected
    told = Exchange(request, 0.0, False, "198.51.100.9")
    assert told.peer_ip == told.client_ip == "198.51.100.9"
    assert Exchange.peer_address(None) == "0.0.0.0"


# --- parser fallback ------------------------------------------------------------------------


def parsers() -> tuple[Any, Any, list[Any]]:
    loop = asyncio.new_event_loop()
    protocol = type("P", (), {"pause_reading": print, "resume_reading": print})()
    settled: list[Any] = []
    fast = HttpRequestParser(protocol, loop, 2**16)

    def slow() -> Any:
        return HttpRequestParserPy(protocol, loop, 2**16)

    return MethodFallbackParser(fast, slow, settled.append), fast, settled


def test_the_fast_parser_is_handed_over_after_the_first_request() -> None:
    wrapper, fast, settled = parsers()
    messages, _, _ = wrapper.feed_data(b"GET /a HTTP/1.1\r\n")
    assert not messages and settled == []
    messages, _, _ = wrapper.feed_data(b"Host: a\r\n\r\n")
    assert [m.path for m, _ in messages] == ["/a"]
    assert settled == [fast]
    messages, _, _ = fast.feed_data(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [m.path for m, _ in messages] == ["/b"]


def test_a_rare_method_hands_over_the_python_parser() -> None:
    wrapper, fast, settled = parsers()
    messages, _, _ = wrapper.feed_data(b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [(m.method, m.path) for m, _ in messages] == [("BREW", "/pot")]
    assert len(settled) == 1
    assert isinstance(settled[0], HttpRequestParserPy) and settled[0] is not fast
    messages, _, _ = settled[0].feed_data(b"BREW /two HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [m.path for m, _ in messages] == ["/two"]
