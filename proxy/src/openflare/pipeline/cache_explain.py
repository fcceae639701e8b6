"""The cache stage's entry in a decision trace (pipeline/explain.py).

`CacheStage.__call__` hands a traced request here once. A full trace first writes down what the
stage is about to decide — eligibility, the cache key and variant, the stored entry with its
freshness arithmetic and the directives it came from, collapsing — using the stage's own
matcher, bypass test, store and policy functions (the store read is `peek`: no move in the
memory store's LRU order, no Redis TTL refresh). A live request then runs the stage's normal
code (so what happens is exactly what would have happened untraced) and the outcome is added;
an explain dry run stops there and reports the predicted outcome, without fetching, storing,
collapsing, refreshing or counting a hit.

`plan` follows the branches of `CacheStage.__call__` in the same order, and takes the freshness
decision with the same function (`cache.policy.reuse`); the E2E tests check that the prediction
matches what a live request does for HIT, STALE, MISS/STORE and BYPASS.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from openflare.cache.key import variant_key
from openflare.cache.policy import (
    RequestDirectives,
    response_cache_control,
    reuse,
)

if TYPE_CHECKING:
    from openflare.cache.entry import CacheEntry
    from openflare.pipeline.base import Exchange, Handler
    from openflare.pipeline.cache import CacheStage
    from openflare.pipeline.explain import DecisionTrace

SERVED_FROM_CACHE = ("HIT", "STALE")
STORED_OUTCOMES = ("STORE", "REVALIDATED", "EXPIRED")


def _seconds(value: float) -> float:
    return round(value, 3)


def entry_view(entry: CacheEntry, now: float) -> dict[str, Any]:
    """A stored entry and the freshness arithmetic behind its TTL."""
    age = entry.age(now)
    lifetime = entry.effective_lifetime()
    ttl = lifetime - age
    headers = entry.header_map()
    return {
        "status": entry.status,
        "fresh": ttl > 0,
        "age_s": _seconds(age),
        "lifetime_s": _seconds(lifetime),
        "ttl_s": _seconds(ttl),
        "freshness": (
            f"lifetime {lifetime:g}s ({entry.freshness_source}) - age {age:.3f}s = ttl {ttl:.3f}s"
        ),
        "freshness_source": entry.freshness_source,
        "directives": response_cache_control(headers).directives,
        "stale_while_revalidate_s": entry.stale_while_revalidate,
        "stale_if_error_s": entry.stale_if_error,
        "must_revalidate": entry.must_revalidate,
        "no_cache": entry.no_cache,
        "soft_purged": entry.invalidated,
        "date": headers.get("Date"),
        "expires": headers.get("Expires"),
        "etag": entry.etag,
        "last_modified": entry.last_modified,
        "vary": list(entry.vary),
        "hits": entry.hits,
        "size_bytes": entry.size,
    }


def _directives(directives: RequestDirectives) -> dict[str, Any]:
    return {
        "no_cache": directives.no_cache,
        "no_store": directives.no_store,
        "only_if_cached": directives.only_if_cached,
        "max_age": directives.max_age,
        "max_stale": ("any" if directives.max_stale == float("inf") else directives.max_stale),
        "min_fresh": directives.min_fresh,
    }


async def _stored(
    stage: CacheStage, exchange: Exchange, primary: str
) -> tuple[tuple[str, ...] | None, str | None, CacheEntry | None]:
    headers = exchange.request.headers
    vary = await stage._store.get_vary(primary)
    if vary is None:
        return None, None, None
    variant = variant_key(primary, vary, headers)
    return vary, variant, await stage._store.peek(variant)  # no LRU move, no TTL refresh


async def plan(
    stage: CacheStage, exchange: Exchange, step: dict[str, Any]
) -> tuple[str, int | None]:
    """(predicted cache status, status of the stored answer or None when the request would go
    on to the origin), with the reasons written into `step`."""
    method = exchange.method
    if method != "GET" and method != "HEAD":
        step.update(eligible=False, reason="method")
        return "NONE", None
    settings = stage._rules.match(exchange.path, method)
    step["rule"] = settings.rule_id
    bypass = stage._bypass_reason(exchange, settings)
    if bypass is not None:
        step.update(eligible=False, reason=bypass)
        return "BYPASS", None
    headers = exchange.request.headers
    directives = RequestDirectives.parse(headers)
    primary = settings.key.primary(
        exchange.request.scheme, exchange.host, exchange.path, exchange.query, headers
    )
    step.update(eligible=True, key=primary, request_directives=_directives(directives))
    try:
        vary, variant, entry = await _stored(stage, exchange, primary)
    except Exception as exc:  # the stage itself treats a store outage as a miss
        step["store_error"] = type(exc).__name__
        vary, variant, entry = None, None, None
    step.update(vary=list(vary or ()), variant=variant, stored=None)
    if entry is not None and "Authorization" in headers and not entry.auth_shareable:
        step["stored_not_shareable"] = True  # RFC 9111 §3.5
        entry = None
    now = time.time()
    if entry is not None:
        step["stored"] = entry_view(entry, now)
        decision = reuse(entry, entry.age(now), directives)  # the stage's own decision
        if decision == "fresh":
            return "HIT", 304 if stage._not_modified(exchange, entry) else entry.status
        if decision == "only-if-cached":
            return "MISS", 504
        if decision == "stale-while-revalidate":
            refreshing = stage._flights.in_flight(primary + "\0" + entry.key)
            step["refresh"] = "already in flight" if refreshing else "starts in the background"
            return "STALE", entry.status
    elif directives.only_if_cached:
        return "MISS", 504
    if method == "HEAD":
        step["collapsing"] = "none (a HEAD miss is forwarded as it is)"
        return "MISS", None
    until = stage._uncacheable.get(primary)
    if entry is None and until is not None and until >= time.monotonic():
        step["collapsing"] = "none: hit-for-miss (the last answer for this URL was not storable)"
    else:
        flight_key = primary if entry is None else primary + "\0" + entry.key
        step["collapsing"] = (
            "joins the origin fetch already in flight"
            if stage._flights.in_flight(flight_key)
            else "leader: fetches from the origin, concurrent requests wait for it"
        )
    return ("MISS" if entry is None else "REVALIDATE"), None


def _cache_status_header(exchange: Exchange, response: web.StreamResponse | None) -> str | None:
    if response is not None and "Cache-Status" in response.headers:
        return response.headers["Cache-Status"]
    for name, value in exchange.extra_headers or ():
        if name == "Cache-Status":
            return value
    return None


async def explain_cache(
    stage: CacheStage, exchange: Exchange, next: Handler, trace: DecisionTrace
) -> web.StreamResponse:
    trace.cache_entered = True
    started = trace.cache_started = time.perf_counter()
    step = trace.step("cache", "")
    predicted: str | None = None
    answer: int | None = None
    if trace.full:
        predicted, answer = await plan(stage, exchange, step)
        step["predicted"] = predicted
    if trace.dry_run:
        step["decision"] = predicted or ""
        step["ms"] = round((time.perf_counter() - started) * 1000, 3)
        if answer is not None:
            trace.answered_by = "cache"
            exchange.cache_status = predicted or ""
            return web.Response(status=answer)  # never sent: the explain summary reads the trace
        return await next(exchange)
    try:
        response = await stage(exchange, next)  # the normal code: trace.cache_entered is set
    except BaseException:
        _outcome(step, exchange, None, started, trace.full)
        raise
    _outcome(step, exchange, response, started, trace.full)
    key = step.get("key")
    if trace.full and exchange.cache_status in STORED_OUTCOMES and isinstance(key, str):
        try:
            _, _, stored = await _stored(stage, exchange, key)
        except Exception:
            stored = None
        if stored is not None:
            step["stored_now"] = entry_view(stored, time.time())
    return response


def _outcome(
    step: dict[str, Any],
    exchange: Exchange,
    response: web.StreamResponse | None,
    started: float,
    full: bool,
) -> None:
    status = exchange.cache_status
    step["decision"] = status or "NONE"
    step["status"] = status or None
    spent = (time.perf_counter() - started) * 1000 - max(exchange.upstream_ms, 0.0)
    step["ms"] = round(max(0.0, spent), 3)  # time in the cache stage, origin wait excluded
    if full:
        step["ttl_s"] = exchange.cache_ttl
        step["age_s"] = exchange.cache_age
        step["cache_status_header"] = _cache_status_header(exchange, response)
