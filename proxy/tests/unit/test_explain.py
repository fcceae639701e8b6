"""Decision traces per stage, the explain dry run, Server-Timing, the X-Edge-Trace cap, the
trace ring buffer, who may be traced, and the `openflare explain` renderer.

The dry runs go through `build_explain_handler`: the real stages (WAF, rate limit, route,
cache) built from a bundle, over an in-memory cache store, ending in `DryRunTerminal`."""

from __future__ import annotations

import io
import re
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import bundle_factories
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cache_factories import entry as cache_entry
from multidict import CIMultiDict, CIMultiDictProxy

from openflare.admin.explain_routes import (
    DescribedRequest,
    ExplainInputError,
    build_explain_handler,
    parse_description,
    summarize,
)
from openflare.cache.entry import CacheEntry
from openflare.config.loader import ConfigBundle
from openflare.config.models import ProxyConfig
from openflare.deps import Deps
from openflare.explain_cli import Painter, parse_headers, render, use_colour
from openflare.observability.decision_traces import TraceBuffer
from openflare.observability.logging import LogWriter
from openflare.pipeline import explain
from openflare.pipeline.base import Exchange
from openflare.pipeline.explain import DecisionTrace, encode_trace_header
from openflare.ratelimit.bucket import Limit
from openflare.ratelimit.memory import MemoryBackend
from openflare.ratelimit.rules import RateLimitRules
from openflare.routing import Route
from openflare.waf.rules import WafRules

TOKEN = "a-very-secret-admin-token-1234"
WAF = """
rules:
  - id: sqli-test
    tags: [sqli]
    match: {any: [{target: args, transforms: [lowercase], contains: "union select"}]}
    action: {type: block}
    score: 5
"""
RATE = """
rules:
  - id: tight
    key: ip
    path_prefix: /tight/
    rate: 1
    period: minute
    burst: 2
"""
PROXY: dict[str, Any] = {
    "upstreams": [{"name": "o", "targets": ["http://10.9.8.7:8000"]}],
    "routing": {
        "routes": [
            {"id": "timed", "path_prefix": "/timed/", "upstream": "o", "server_timing": True},
            {"id": "rest", "path_prefix": "/", "upstream": "o"},
        ]
    },
    "explain": {"trace_enabled": True, "trace_cidrs": ["192.0.2.0/24"]},
}
CLIENT = "203.0.113.9"


def make_bundle(proxy: dict[str, Any] | None = None) -> ConfigBundle:
    return bundle_factories.config_bundle(
        ProxyConfig.model_validate(proxy or PROXY),
        waf=WafRules.model_validate(yaml.safe_load(WAF)),
        rate_limits=RateLimitRules.model_validate(yaml.safe_load(RATE)),
        admin_token=TOKEN,
    )


class DryRun:
    """The explain chain over one bundle and one Deps (shared buckets and cache store)."""

    def __init__(self) -> None:
        self.bundle = make_bundle()
        self.deps = Deps(log=LogWriter(io.BytesIO()))
        self.deps.cache_store(self.bundle.proxy.cache)  # the live runtime made it first
        self.handler = build_explain_handler(self.bundle, self.deps)

    async def run(
        self, url: str, *, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        described = parse_description(
            {"method": method, "url": url, "headers": headers or {}, "client_ip": CLIENT}, None
        )
        request = DescribedRequest(
            described.method, described.scheme, described.target, described.headers, b""
        )
        exchange = Exchange(cast(web.BaseRequest, request), time.monotonic(), False)
        exchange.peer_ip = exchange.client_ip = CLIENT
        trace = DecisionTrace(trigger="explain", dry_run=True)
        exchange.trace = trace
        response = await self.handler(exchange)
        answered_by = trace.answered_by or "edge"
        record = trace.finish(exchange, response.status)
        return record, summarize(record, answered_by, response.status)

    def stage(self, record: dict[str, Any], name: str) -> dict[str, Any]:
        found = [entry for entry in record["stages"] if entry["stage"] == name]
        assert len(found) == 1, record["stages"]
        return found[0]

    async def store(self, url_key: str, *, max_age: int, age: float) -> CacheEntry:
        now = time.time()
        entry = cache_entry(
            url_key,
            headers=(("Cache-Control", f"public, max-age={max_age}"),),
            body=b"stored",
            request_time=now - age,
            response_time=now - age,
            lifetime=float(max_age),
            freshness_source="max-age",
        )
        store = self.deps.current_cache_store
        assert store is not None
        await store.put(entry)
        return entry


@pytest.fixture
async def dry() -> AsyncIterator[DryRun]:
    run = DryRun()
    yield run
    await run.deps.close()


# --- the dry run, stage by stage ------------------------------------------------------------


async def test_dry_run_miss_reaches_the_terminal_not_the_origin(dry: DryRun) -> None:
    record, summary = await dry.run("http://shop.test/page?b=2&a=1")
    assert [s["stage"] for s in record["stages"]] == ["waf", "route", "cache", "upstream"]
    waf = dry.stage(record, "waf")
    assert waf["decision"] == "pass" and waf["matched"] == [] and waf["threshold"] == 5
    assert dry.stage(record, "route") == {
        "stage": "route",
        "decision": "rest",
        "upstream": "o",
        "path_prefix": "/",
    }
    cache = dry.stage(record, "cache")
    assert cache["decision"] == "MISS" and cache["eligible"] is True
    assert cache["key"] == "http://shop.test/page?a=1&b=2"  # canonical query
    assert cache["stored"] is None
    assert cache["collapsing"].startswith("leader")
    upstream = dry.stage(record, "upstream")
    assert upstream["decision"] == "would_forward"
    assert upstream["targets"] == ["http://10.9.8.7:8000"]
    assert upstream["url_path"] == "/page?b=2&a=1"  # the raw query goes upstream as sent
    assert summary["response"] == {"source": "origin", "status": None}
    store = dry.deps.current_cache_store
    assert store is not None and (await store.stats()).entries == 0  # nothing stored


async def test_dry_run_hit_reports_freshness_and_touches_nothing(dry: DryRun) -> None:
    entry = await dry.store("http://shop.test/page", max_age=60, age=10)
    record, summary = await dry.run("http://shop.test/page")
    cache = dry.stage(record, "cache")
    assert cache["decision"] == "HIT"
    stored = cache["stored"]
    assert stored["fresh"] is True and stored["lifetime_s"] == 60.0
    assert 9.5 <= stored["age_s"] <= 30 and stored["ttl_s"] == pytest.approx(60 - stored["age_s"])
    assert stored["freshness_source"] == "max-age"
    assert stored["directives"] == {"public": None, "max-age": "60"}
    assert "lifetime 60s (max-age)" in stored["freshness"]
    assert "upstream" not in [s["stage"] for s in record["stages"]]
    assert summary["response"] == {"source": "cache", "status": 200}
    assert summary["cache"]["stored"] is True and summary["cache"]["fresh"] is True
    assert entry.hits == 0  # a dry run is not a hit


async def test_dry_run_stale_entry_is_revalidated(dry: DryRun) -> None:
    await dry.store("http://shop.test/old", max_age=5, age=20)
    record, summary = await dry.run("http://shop.test/old")
    cache = dry.stage(record, "cache")
    assert cache["decision"] == "REVALIDATE"
    assert cache["stored"]["fresh"] is False and cache["stored"]["ttl_s"] < 0
    assert summary["response"]["source"] == "origin"


@pytest.mark.parametrize(
    ("headers", "method", "reason"),
    [
        ({"Cookie": "session=1"}, "GET", "cookie"),
        ({"Range": "bytes=0-1"}, "GET", "range"),
        ({}, "DELETE", "method"),
    ],
)
async def test_dry_run_cache_bypass_reasons(
    dry: DryRun, headers: dict[str, str], method: str, reason: str
) -> None:
    record, _ = await dry.run("http://shop.test/p", method=method, headers=headers)
    cache = dry.stage(record, "cache")
    assert cache["eligible"] is False and cache["reason"] == reason


async def test_dry_run_waf_block_names_rule_score_and_excerpt(dry: DryRun) -> None:
    record, summary = await dry.run("http://shop.test/s?q=1%20UNION%20SELECT%20x")
    waf = dry.stage(record, "waf")
    assert waf["decision"] == "block" and waf["score"] == 5 and waf["status"] == 403
    (found,) = waf["matched"]
    assert found["id"] == "sqli-test" and found["score"] == 5 and found["target"] == "arg:q"
    assert "union select" in found["excerpt"]  # the transformed value, lower-cased
    assert [s["stage"] for s in record["stages"]] == ["waf"]  # nothing after a block
    assert summary["response"] == {"source": "waf", "status": 403}
    assert summary["waf"]["would_block"] is True and summary["waf"]["rules"] == ["sqli-test"]


async def test_dry_run_peeks_at_the_bucket_without_spending(dry: DryRun) -> None:
    for _ in range(3):  # three explanations of a burst-2 rule: each sees the full bucket
        record, summary = await dry.run("http://shop.test/tight/x")
        limit = dry.stage(record, "ratelimit")
        assert limit["decision"] == "allow" and limit["spent"] is False
        (rule,) = limit["rules"]
        assert rule["id"] == "tight" and rule["bucket"] == f"tight|{CLIENT}"
        assert rule["remaining"] == 1 and rule["burst"] == 2  # left after this request
    backend = dry.deps.ratelimit._local
    assert backend is not None and len(backend) == 0  # no bucket was ever written
    limits = [Limit.of(1, 2, 60.0)]
    for _ in range(2):  # now spend the bucket for real
        assert backend.decide_now([("tight", CLIENT)], limits).admitted
    record, summary = await dry.run("http://shop.test/tight/x")
    limit = dry.stage(record, "ratelimit")
    assert limit["decision"] == "deny" and limit["rules"][0]["retry_after_s"] >= 1
    assert summary["response"] == {"source": "ratelimit", "status": 429}
    assert summary["ratelimit"]["would_allow"] is False


async def test_dry_run_hit_leaves_the_lru_order_and_hits_alone(dry: DryRun) -> None:
    from openflare.cache.storage.memory import MemoryStore

    first = await dry.store("http://shop.test/first", max_age=60, age=1)
    await dry.store("http://shop.test/second", max_age=60, age=1)
    store = dry.deps.current_cache_store
    assert isinstance(store, MemoryStore)
    before = list(store._entries)
    record, _ = await dry.run("http://shop.test/first")
    assert dry.stage(record, "cache")["decision"] == "HIT"
    assert list(store._entries) == before == ["http://shop.test/first", "http://shop.test/second"]
    assert first.hits == 0


async def test_dry_run_refusal_by_normalize_is_an_edge_answer(dry: DryRun) -> None:
    record, summary = await dry.run("http://shop.test/a%2Fb")
    assert record["stages"] == [
        {"stage": "normalize", "decision": "refuse", "status": 400, "reason": "encoded_slash"}
    ]
    assert record["response"]["error"] == "encoded_slash"
    assert summary["response"] == {"source": "edge", "status": 400}


async def test_memory_backend_peek_changes_nothing() -> None:
    backend = MemoryBackend(10, clock=lambda: 100.0)
    limits = [Limit.of(1, 1, 60.0)]
    assert (await backend.peek([("r", "c")], limits)).admitted
    assert len(backend) == 0
    assert backend.decide_now([("r", "c")], limits).admitted
    peeked = await backend.peek([("r", "c")], limits)
    assert not peeked.admitted and len(backend) == 1


# --- the explain request body -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        ({}, '"url" is required'),
        ({"url": "ftp://x/"}, "http(s)://"),
        ({"url": "/x", "method": "GE T"}, "method"),
        ({"url": "/x", "headers": "A: b"}, "object or a list"),
        ({"url": "/x", "headers": [["A"]]}, "[name, value] pairs"),
        ({"url": "/x", "headers": {"A b": "c"}}, "not a valid HTTP token"),
        ({"url": "/x", "headers": {"A": "b\r\nX: y"}}, "one line"),
        ({"url": "/x", "body": 3}, '"body" must be a string'),
        ({"url": "/x", "client_ip": "1.2.3"}, "not an IP address"),
        ({"url": "/x", "surprise": 1}, "unknown field"),
    ],
)
def test_bad_descriptions_say_what_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(ExplainInputError, match=re.escape(message)):
        parse_description(data, None)


def test_description_defaults_and_host() -> None:
    described = parse_description({"url": "https://Shop.test:8443/a?b#frag"}, "10.0.0.1")
    assert (described.method, described.scheme, described.target) == ("GET", "https", "/a?b")
    assert described.headers == [("Host", "Shop.test:8443")]
    assert described.client_ip == "10.0.0.1"
    pairs = parse_description(
        {"url": "/x", "headers": [["Host", "h.test"], ["X-A", "1"], ["X-A", "2"]]}, None
    )
    assert pairs.host == "h.test" and pairs.headers[1:] == [("X-A", "1"), ("X-A", "2")]


# --- Server-Timing and the X-Edge-Trace header ----------------------------------------------


def _mocked_exchange(
    headers: dict[str, str] | None = None, ip: str = CLIENT, path: str = "/x"
) -> Exchange:
    request = make_mocked_request("GET", path, headers=headers or {})
    exchange = Exchange(request, time.monotonic(), False)
    exchange.request_id = "req-1"
    exchange.path = path
    exchange.client_ip = ip
    return exchange


def test_server_timing_lists_stages_with_decision_words_only() -> None:
    trace = DecisionTrace(trigger="server_timing", full=False, server_timing=True)
    trace.step("waf", "pass", 0.00008)
    trace.step("ratelimit", "allow", 0.00002)
    trace.step("route", "timed")
    trace.step("cache", "HIT", 0.0003)
    exchange = _mocked_exchange()
    exchange.cache_status = "MISS"
    exchange.upstream_ms = 12.4
    headers: CIMultiDict[str] = CIMultiDict()
    trace.apply_headers(exchange, headers)
    assert headers["Server-Timing"] == (
        "waf;dur=0.08;desc=pass, ratelimit;dur=0.02;desc=allow, cache;dur=0.30;desc=MISS, "
        "upstream;dur=12.40"
    )
    assert "X-Edge-Trace" not in headers  # timing only: no trace


def test_trace_header_is_capped_and_marks_truncation() -> None:
    record: dict[str, Any] = {
        "request_id": "r-1",
        "route": "rest",
        "stages": [{"stage": "waf", "decision": "pass", "ms": 0.1, "noise": "x" * 5000}],
    }
    brief = encode_trace_header(record, 256)
    assert len(brief) <= 256
    assert '"truncated":true' in brief and '"decision":"pass"' in brief
    assert '"full":"/admin/trace/r-1"' in brief
    record["stages"] *= 40
    minimal = encode_trace_header(record, 256)
    assert len(minimal) <= 256 and '"truncated":true' in minimal and "stages" not in minimal
    small = {"request_id": "r-2", "stages": []}
    assert encode_trace_header(small, 256) == '{"request_id":"r-2","stages":[]}'
    assert encode_trace_header({"request_id": "é"}, 256) == '{"request_id":"\\u00e9"}'


def test_ring_buffer_is_bounded_and_newest_first() -> None:
    buffer = TraceBuffer(3)
    for index in range(5):
        buffer.add(f"id-{index}", {"request": {"path": f"/{index}"}, "response": {"status": 200}})
    assert len(buffer) == 3 and buffer.recorded == 5
    assert buffer.get("id-1") is None and buffer.get("id-4") is not None
    assert [t["request_id"] for t in buffer.recent(10)] == ["id-4", "id-3", "id-2"]
    buffer.resize(1)
    assert [t["request_id"] for t in buffer.recent(10)] == ["id-4"]


# --- who gets traced ------------------------------------------------------------------------


async def _trigger(
    stage: explain.ExplainStage | explain.ServerTimingStage, exchange: Exchange
) -> DecisionTrace | None:
    seen: list[DecisionTrace | None] = []

    async def next(exchange: Exchange) -> web.StreamResponse:
        seen.append(exchange.trace)
        return web.Response(status=204)

    await stage(exchange, next)
    return seen[0]


def _stage(deps: Deps | None = None, **explain_config: Any) -> explain.ExplainStage:
    proxy = {**PROXY, "explain": {"trace_enabled": True, **explain_config}}
    stage = explain.build(make_bundle(proxy), deps or Deps(log=LogWriter(io.BytesIO())))
    assert stage is not None
    return stage


async def test_admin_token_header_traces_and_anything_else_does_not() -> None:
    deps = Deps(log=LogWriter(io.BytesIO()))
    stage = _stage(deps)
    right = await _trigger(stage, _mocked_exchange({"X-Edge-Trace-Token": TOKEN}))
    assert right is not None and right.full and right.trigger == "token"
    assert deps.traces.buffer.get("req-1") is not None
    for headers in (
        {},
        {"X-Edge-Trace-Token": TOKEN + "x"},
        {"X-Edge-Trace-Token": ""},
        {"X-Edge-Trace": "1"},
        {"Authorization": f"Bearer {TOKEN}"},
    ):
        trace = await _trigger(stage, _mocked_exchange(headers, ip="198.51.100.1"))
        assert trace is None, headers


async def test_wrong_trace_tokens_lock_the_client_out() -> None:
    proxy = {**PROXY, "admin_api": {"auth_failure_limit": 2}}
    bundle = make_bundle({**proxy, "explain": {"trace_enabled": True}})
    stage = explain.build(bundle, Deps(log=LogWriter(io.BytesIO())))
    assert stage is not None
    for _ in range(2):
        assert await _trigger(stage, _mocked_exchange({"X-Edge-Trace-Token": "guess"})) is None
    locked = await _trigger(stage, _mocked_exchange({"X-Edge-Trace-Token": TOKEN}))
    assert locked is None  # the right token does not count while locked out


async def test_debug_cidr_traces_by_client_ip() -> None:
    stage = _stage(trace_cidrs=["192.0.2.0/24"])
    inside = await _trigger(stage, _mocked_exchange(ip="192.0.2.77"))
    assert inside is not None and inside.trigger == "cidr"
    assert await _trigger(stage, _mocked_exchange(ip="198.51.100.1")) is None
    assert await _trigger(stage, _mocked_exchange(ip="::ffff:192.0.2.1")) is not None


async def test_server_timing_route_gets_a_timing_only_trace() -> None:
    proxy = {**PROXY, "explain": {}}
    deps = Deps(log=LogWriter(io.BytesIO()))
    assert explain.build(make_bundle(proxy), deps) is None  # tracing is off
    stage = explain.build_server_timing(make_bundle(proxy), deps)
    assert stage is not None
    timed = _mocked_exchange({"X-Edge-Trace-Token": TOKEN}, path="/timed/x")
    trace = await _trigger(stage, timed)
    assert trace is not None and trace.server_timing and not trace.full
    assert await _trigger(stage, _mocked_exchange(path="/other")) is None


async def test_server_timing_route_switches_it_on_in_a_full_trace() -> None:
    stage = explain.build_server_timing(make_bundle(), Deps(log=LogWriter(io.BytesIO())))
    assert stage is not None
    exchange = _mocked_exchange(path="/timed/x")
    full = exchange.trace = DecisionTrace(trigger="cidr")
    assert await _trigger(stage, exchange) is full and full.server_timing and full.full


def test_stage_is_left_out_when_nothing_is_configured() -> None:
    proxy = {**PROXY, "explain": {}, "routing": {"default_upstream": "o"}}
    deps = Deps(log=LogWriter(io.BytesIO()))
    assert explain.build(make_bundle(proxy), deps) is None
    assert explain.build_server_timing(make_bundle(proxy), deps) is None


def test_trace_decision_comes_before_limits_and_server_timing_after_normalize() -> None:
    from openflare.runtime import PIPELINE

    names = [name for name, _ in PIPELINE]
    assert names.index("recovery") < names.index("explain") < names.index("limits")
    assert names.index("normalize") < names.index("server_timing") < names.index("waf")


# --- refusals by limits and normalize are traced ----------------------------------------------


def _front(**server: Any) -> tuple[Deps, Any]:
    """explain → limits → normalize → a terminal that must not be reached."""
    from openflare.pipeline import limits, normalize
    from openflare.pipeline.base import compose

    proxy = {**PROXY, "server": server} if server else PROXY
    bundle = make_bundle(proxy)
    deps = Deps(log=LogWriter(io.BytesIO()))
    stages = [
        explain.build(bundle, deps),
        limits.build(bundle, deps),
        normalize.build(bundle, deps),
    ]

    async def origin(exchange: Exchange) -> web.StreamResponse:
        return web.Response(status=299)

    return deps, compose([stage for stage in stages if stage is not None], origin)


def _live(
    path: str, headers: dict[str, str] | None = None, ip: str = CLIENT, request_id: str = "req-1"
) -> Exchange:
    request = make_mocked_request("GET", path, headers={"Host": "shop.test", **(headers or {})})
    exchange = Exchange(request, time.monotonic(), False)
    exchange.request_id = request_id
    exchange.client_ip = ip
    return exchange


async def test_limits_refusal_of_a_traced_request_is_traced() -> None:
    deps, handler = _front(max_header_bytes=1024)
    big = {"X-Big": "b" * 2000}
    response = await handler(_live("/x", {**big, "X-Edge-Trace-Token": TOKEN}, request_id="big"))
    assert response.status == 431
    record = deps.traces.buffer.get("big")
    assert record is not None and record["trigger"] == "token"
    assert record["stages"][-1] == {
        "stage": "limits",
        "decision": "refuse",
        "status": 431,
        "reason": "headers_too_large",
        "size": record["stages"][-1]["size"],
        "limit": 1024,
    }
    assert record["stages"][-1]["size"] > 2000
    response = await handler(
        _live("/x", {"Host": "h" * 5000, "X-Edge-Trace-Token": TOKEN}, request_id="host")
    )
    assert response.status == 431
    host = deps.traces.buffer.get("host")
    assert host is not None and len(host["request"]["host"]) == 256  # a trace stays small
    assert record["response"] == {**record["response"], "status": 431, "error": "headers_too_large"}
    long_uri = "/" + "u" * 9000
    response = await handler(_live(long_uri, ip="192.0.2.5", request_id="uri"))  # debug CIDR
    assert response.status == 414
    uri = deps.traces.buffer.get("uri")
    assert uri is not None and uri["trigger"] == "cidr"
    assert uri["stages"][-1]["reason"] == "uri_too_long" and len(uri["request"]["target"]) <= 256
    # not traced: refused the same, nothing recorded
    response = await handler(_live("/x", big, request_id="quiet"))
    assert response.status == 431 and deps.traces.buffer.get("quiet") is None


async def test_normalize_refusal_of_a_traced_request_is_traced() -> None:
    deps, handler = _front()
    response = await handler(_live("/a/%00b", {"X-Edge-Trace-Token": TOKEN}, request_id="nul"))
    assert response.status == 400
    record = deps.traces.buffer.get("nul")
    assert record is not None
    assert record["stages"] == [
        {"stage": "normalize", "decision": "refuse", "status": 400, "reason": "encoded_nul"}
    ]
    assert record["request"]["path"] is None  # refused before a normalized path existed
    response = await handler(_live("/ok", ip="192.0.2.9", request_id="fine"))
    assert response.status == 299
    fine = deps.traces.buffer.get("fine")
    assert fine is not None and fine["stages"] == [] and fine["response"]["status"] == 299


async def test_a_huge_trace_token_header_is_refused_by_limits_and_not_compared() -> None:
    deps, handler = _front(max_header_bytes=4096)
    huge = "t" * 100_000
    response = await handler(_live("/x", {"X-Edge-Trace-Token": huge}, ip="198.51.100.3"))
    assert response.status == 431
    assert deps.traces.buffer.get("req-1") is None  # a wrong token: not traced, but counted
    assert len(deps.auth_failures) == 1


# --- whatever the input, the decision never raises --------------------------------------------


async def test_odd_client_ips_and_header_values_are_simply_not_traced() -> None:
    stage = _stage(trace_cidrs=["10.0.0.0/8"])
    for ip in ("", "unknown", "0.0.0.0", "::ffff:127.0.0.1", "fe80::1%eth0", "10.0.0.300", "::"):
        assert await _trigger(stage, _mocked_exchange(ip=ip)) is None, ip
    odd = _mocked_exchange(ip=cast(str, None))
    assert await _trigger(stage, odd) is None
    assert await _trigger(stage, _mocked_exchange(ip="::ffff:10.1.2.3")) is not None
    for value in ("\udcff\udcfe", TOKEN + "\udc80", "\x00", " " * 5000, "t" * 1_100_000):
        # as aiohttp's parser hands them over (bytes that are not UTF-8: surrogate escapes),
        # on a request with no transport (no peer: 0.0.0.0)
        headers = CIMultiDictProxy(CIMultiDict({"X-Edge-Trace-Token": value}))
        request = SimpleNamespace(transport=None, method="GET", headers=headers)
        exchange = Exchange(cast(web.BaseRequest, request), time.monotonic(), False)
        exchange.request_id = "odd"
        assert exchange.client_ip == "0.0.0.0"
        assert await _trigger(stage, exchange) is None, value[:10]


async def test_a_failing_decision_means_untraced_not_500() -> None:
    stage = _stage(trace_cidrs=["10.0.0.0/8"])

    class Broken:
        def get(self, name: str) -> str:
            raise RuntimeError("odd header table")

    exchange = _mocked_exchange(ip="10.1.1.1")
    request = cast(Any, exchange.request)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(request), "headers", property(lambda self: Broken()))
        assert await _trigger(stage, exchange) is None


def test_route_carries_its_server_timing_switch() -> None:
    assert Route("r", "o").server_timing is False


def test_default_trace_header_is_never_forwarded() -> None:
    from multidict import CIMultiDictProxy

    from openflare.upstream.headers import upstream_request_headers

    headers = CIMultiDictProxy(CIMultiDict([("X-Edge-Trace-Token", TOKEN), ("X-A", "1")]))
    sent = upstream_request_headers(
        headers, request_id="r", peer_ip=CLIENT, peer_trusted=False, scheme="http", pass_host=True
    )
    assert ("X-A", "1") in sent
    assert all(name.lower() != "x-edge-trace-token" for name, _ in sent)


# --- the CLI's rendering ---------------------------------------------------------------------


async def test_cli_render_plain_and_coloured(dry: DryRun) -> None:
    record, summary = await dry.run("http://shop.test/s?q=1%20UNION%20SELECT%20x")
    result = {"summary": summary, "trace": record, "config_hash": "abc"}
    plain = render(result, Painter(False))
    assert "\033[" not in plain
    assert "refuse with 403: WAF rules sqli-test" in plain
    assert "matched sqli-test (block, score 5) in arg:q" in plain
    coloured = render(result, Painter(True))
    assert "\033[31mblock" in coloured


def test_cli_colour_only_on_a_terminal_without_no_color() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_colour(Tty(), {}) is True
    assert use_colour(Tty(), {"NO_COLOR": "1"}) is False
    assert use_colour(io.StringIO(), {}) is False


def test_cli_encodes_the_url_like_curl() -> None:
    from openflare.explain_cli import encode_url

    assert encode_url("http://shop.test/a b/é?q=a b&r=ü") == (
        "http://shop.test/a%20b/%C3%A9?q=a%20b&r=%C3%BC"
    )
    assert encode_url("http://shop.test/%41%2f%zz?x=%20") == "http://shop.test/%41%2f%zz?x=%20"
    assert encode_url("/p a?x=\t1") == "/p%20a?x=%091"  # a path alone (Host: localhost)
    assert encode_url("http://shop.test?q=é") == "http://shop.test?q=%C3%A9"
    assert encode_url("https://shop.test:8443") == "https://shop.test:8443"
    assert encode_url("http://shop.test/a#frag ment") == "http://shop.test/a#frag ment"


def test_cli_sends_the_encoded_url_unless_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import json as jsonlib

    from openflare import explain_cli

    sent: list[str] = []

    def urlopen(request: Any, timeout: float) -> Any:
        sent.append(jsonlib.loads(request.data)["url"])
        raise OSError("no admin API here")

    monkeypatch.setattr(explain_cli.urllib.request, "urlopen", urlopen)
    parser = argparse.ArgumentParser()
    explain_cli.add_parser(parser.add_subparsers())
    for argv in (
        ["explain", "http://s.test/a b?q=é"],
        ["explain", "--raw-url", "http://s.test/a b"],
    ):
        args = parser.parse_args(argv)
        assert explain_cli.run(args, io.StringIO(), io.StringIO()) == 1
    assert sent == ["http://s.test/a%20b?q=%C3%A9", "http://s.test/a b"]


def test_cli_headers() -> None:
    assert parse_headers(["Accept: text/html", "X-A:1"]) == [["Accept", "text/html"], ["X-A", "1"]]
    with pytest.raises(ValueError):
        parse_headers(["no colon"])
