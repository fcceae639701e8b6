"""Stages 9–11 and 13 — the shared HTTP cache: eligibility, lookup, request collapsing, store.

```
eligible?  no → BYPASS, forward (unsafe methods invalidate the URL on success)
lookup     fresh → HIT (304 for a matching client validator)
           stale, within stale-while-revalidate → STALE, refresh once in the background
           stale or must revalidate → conditional fetch → 304: REVALIDATED, 200: EXPIRED
miss       one collapsed origin fetch per key (a task of its own) → STORE or MISS
errors     within stale-if-error → STALE, else the upstream error
```

Storable responses are read whole (up to `cache.max_object_bytes`) by the fetch task before
anyone is answered, so a truncated body is never stored or shared; anything not storable, or
larger, is streamed to the request that fetched it, and collapsed waiters fetch for themselves.
Every policy decision is a pure function in cache/policy.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from openflare.cache.control import CacheControl, parse_cache_control
from openflare.cache.entry import (
    HAS_CONTENT_TYPE,
    CacheEntry,
    parse_headers,
    render_headers,
    without_headers,
)
from openflare.cache.key import parse_cookies, variant_key
from openflare.cache.matcher import CacheRuleMatcher, RuleSettings
from openflare.cache.policy import (
    RequestDirectives,
    freshness,
    http_date,
    may_serve_stale_on_error,
    parse_age,
    response_cache_control,
    reuse,
    storable_reason,
    vary_names,
)
from openflare.cache.singleflight import SingleFlight
from openflare.observability.tracing import tracing_for
from openflare.pipeline.base import Exchange, Handler, plain_error
from openflare.pipeline.cache_explain import explain_cache
from openflare.pipeline.forward import (
    RequestBodyError,
    UpstreamClient,
    UpstreamFailure,
    build_client,
)
from openflare.pipeline.normalize import normalize_path
from openflare.pipeline.stored_response import StoredResponse
from openflare.upstream.headers import client_response_headers
from openflare.upstream.http1 import UpstreamResponse

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from openflare.cache.storage.base import CacheStore
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# After a response that could not be stored, requests for that URL skip collapsing for a while
# (Varnish's hit-for-miss): they fetch in parallel, and a storable answer ends it at once.
HIT_FOR_MISS_SECONDS = 30.0
HIT_FOR_MISS_MAX_KEYS = 10_000
SERVER_ERRORS = frozenset({500, 502, 503, 504})
# Stored headers that describe one exchange rather than the representation (each answer from
# the cache sets its own Age, Cache-Status and X-Request-ID).
NOT_STORED_HEADERS = frozenset({"set-cookie", "age", "x-request-id", "cache-status"})
# What a 304 answer to a client's validator leaves out of the stored headers.
NOT_IN_304 = ("Content-Length", "Content-Type", "Content-Encoding")
# Headers a 304 must not overwrite in the stored response (RFC 9111 §3.2).
NOT_UPDATED_BY_304 = frozenset({"content-length", "content-encoding", "transfer-encoding"})
# Bodies of unknown length are reserved against the store's budget in steps of this size.
RESERVE_STEP_BYTES = 64 * 1024


@dataclass(slots=True)
class Stored:
    entry: CacheEntry
    outcome: str  # STORE | REVALIDATED


@dataclass(slots=True)
class Passthrough:
    """Not shareable: only the request that fetched it may use it."""

    upstream: UpstreamResponse
    prefix: bytes  # body bytes already read from `upstream`
    reason: str
    complete: bool = False  # `prefix` is the whole body (upstream already released)


@dataclass(slots=True)
class Failed:
    failure: UpstreamFailure


Outcome = Stored | Passthrough | Failed


class CacheStage:
    __slots__ = (
        "_store",
        "_client",
        "_rules",
        "_config",
        "_normalization",
        "_metrics",
        "_flights",
        "_tag_headers",
        "_strip_tags",
        "_uncacheable",
        "_lookup_latency",
    )

    def __init__(self, bundle: ConfigBundle, deps: Deps, client: UpstreamClient) -> None:
        """The stage for `bundle`: its store, metrics and collapsing come from `deps` (they
        outlive reloads), `client` is the runtime's upstream client (the forward stage's)."""
        config = bundle.proxy.cache
        metrics = deps.metrics
        self._store = deps.cache_store(config)
        self._client = client
        self._rules = CacheRuleMatcher(bundle.cache_rules, config)
        self._config = config
        self._normalization = bundle.proxy.normalization
        self._metrics = metrics
        self._flights: SingleFlight[Outcome] = deps.cache_flights
        self._tag_headers = tuple(h.lower() for h in config.tag_headers)
        self._strip_tags = config.strip_tag_headers
        self._uncacheable: OrderedDict[str, float] = OrderedDict()  # primary → until (monotonic)
        self._lookup_latency = metrics.stage_latency("cache_lookup")

    # --- entry point -------------------------------------------------------------------------

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        if exchange.trace is not None and not exchange.trace.cache_entered:
            return await explain_cache(self, exchange, next, exchange.trace)  # cache_explain.py
        method = exchange.method
        if method != "GET" and method != "HEAD":
            response = await next(exchange)
            if method in UNSAFE_METHODS and 200 <= response.status < 400:
                await self._invalidate(exchange, response)
            return response
        settings = self._rules.match(exchange.path, method)
        bypass = self._bypass_reason(exchange, settings)
        if bypass is not None:
            return await self._bypass(exchange, next)
        headers = exchange.request.headers
        directives = RequestDirectives.parse(headers)
        primary = settings.key.primary(
            exchange.request.scheme, exchange.host, exchange.path, exchange.query, headers
        )
        has_auth = "Authorization" in headers
        entry = await self._lookup(primary, exchange)
        if entry is not None and has_auth and not entry.auth_shareable:
            entry = None  # RFC 9111 §3.5: only shareable responses answer credentialed requests
        now = time.time()
        if entry is not None:
            age = entry.age(now)
            decision = reuse(entry, age, directives)  # the explain dry run predicts with it too
            if decision == "fresh":
                return self._serve(exchange, entry, "HIT", now, age)
            if decision == "only-if-cached":
                return self._gateway_timeout(exchange)
            if decision == "stale-while-revalidate":
                self._refresh_in_background(exchange, primary, entry, settings)
                return self._serve(exchange, entry, "STALE", now)
        elif directives.only_if_cached:
            return self._gateway_timeout(exchange)
        if method == "HEAD":
            # a HEAD miss never stores an empty body for later GETs: forward it as it is
            return await self._bypass(exchange, next, counted="miss", status="MISS")
        return await self._fetch_and_answer(exchange, primary, entry, settings, directives)

    # --- decisions ---------------------------------------------------------------------------

    def _bypass_reason(self, exchange: Exchange, settings: RuleSettings) -> str | None:
        if not settings.eligible:
            return "rule"
        if exchange.cache_bypass:
            return "waf"
        headers = exchange.request.headers
        if "Range" in headers:
            return "range"
        if exchange.request.body_exists:
            return "request-body"  # a "fat GET" body must not select a shared response
        if settings.bypass_on_authorization and "Authorization" in headers:
            return "authorization"  # else RFC 9111 §3.5 decides, per stored response
        if settings.bypass_on_cookie and "Cookie" in headers:
            jar = parse_cookies(headers.getall("Cookie"))
            if any(name not in settings.cookies_allowed for name in jar):
                return "cookie"
        if "no-store" in headers.get("Cache-Control", "").lower():
            return "no-store"
        return None

    async def _bypass(
        self,
        exchange: Exchange,
        next: Handler,
        counted: str = "bypass",
        status: str = "BYPASS",
    ) -> web.StreamResponse:
        exchange.cache_status = status
        self._metrics.cache_operation(counted)
        exchange.add_response_header("Cache-Status", f"OpenFlare; fwd={counted}")
        return await next(exchange)

    async def _lookup(self, primary: str, exchange: Exchange) -> CacheEntry | None:
        started = time.monotonic()
        try:
            return await self._store.lookup(primary, exchange.request.headers)
        except Exception:  # a store outage degrades to a miss, never a 5xx
            self._metrics.cache_operation("error")
            return None
        finally:
            self._lookup_latency.observe(time.monotonic() - started)

    # --- serving stored responses ------------------------------------------------------------

    def _serve(
        self,
        exchange: Exchange,
        entry: CacheEntry,
        status: str,
        now: float,
        current_age: float | None = None,
    ) -> StoredResponse:
        entry.hits += 1
        exact_age = entry.age(now) if current_age is None else current_age
        age = int(exact_age)
        ttl = int(entry.effective_lifetime() - exact_age)
        exchange.cache_status = status
        exchange.cache_ttl = ttl
        exchange.cache_age = age
        self._metrics.cache_operation(status.lower())
        if self._not_modified(exchange, entry):
            response = StoredResponse(
                304,
                None,
                without_headers(entry.headers, NOT_IN_304),
                entry.defaults & ~HAS_CONTENT_TYPE,
                b"",
            )
        else:
            response = StoredResponse(
                entry.status, entry.reason, entry.headers, entry.defaults, entry.body
            )
        headers = response.headers
        headers["Age"] = str(age)
        headers["Cache-Status"] = (
            f"OpenFlare; hit; ttl={ttl}"
            if status in ("HIT", "STALE")
            else f"OpenFlare; fwd={'stale' if status == 'REVALIDATED' else 'miss'}; stored"
        )
        return response

    @staticmethod
    def _not_modified(exchange: Exchange, entry: CacheEntry) -> bool:
        """A client validator that matches the stored response (RFC 9110 §13.1)."""
        if entry.status != 200:
            return False
        headers = exchange.request.headers
        if_none_match = headers.get("If-None-Match")
        if if_none_match is not None:
            if entry.etag is None:
                return False
            if if_none_match.strip() == "*":
                return True
            wanted = entry.etag.removeprefix("W/")
            return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))
        since_text = headers.get("If-Modified-Since")
        if since_text is None:
            return False
        since = http_date(since_text)
        modified = http_date(entry.last_modified)
        return since is not None and modified is not None and modified <= since

    def _gateway_timeout(self, exchange: Exchange) -> web.StreamResponse:
        exchange.cache_status = "MISS"
        self._metrics.cache_operation("miss")
        return plain_error(exchange, 504, "Gateway Timeout (only-if-cached and not cached)")

    # --- fetching ------------------------------------------------------------------------------

    async def _fetch_and_answer(
        self,
        exchange: Exchange,
        primary: str,
        entry: CacheEntry | None,
        settings: RuleSettings,
        directives: RequestDirectives,
    ) -> web.StreamResponse:
        if entry is None and self._recently_uncacheable(primary):
            # hit-for-miss: the last answer for this URL was not storable, so concurrent
            # requests would only queue behind each other; each fetches (and may still store)
            outcome: Outcome | None = await self._fetch(exchange, primary, entry, settings)
            leader = True
        else:
            flight_key = primary if entry is None else primary + "\0" + entry.key
            outcome, leader = await self._flights.join(
                flight_key,
                lambda: self._fetch(exchange, primary, entry, settings),
                self._config.lock_timeout_ms / 1000,
            )
        if not leader:
            self._metrics.cache_collapsed.inc()
            shared = outcome.entry if isinstance(outcome, Stored) else None
            if shared is not None and shared.key == variant_key(
                primary, shared.vary, exchange.request.headers
            ):
                return self._serve(exchange, shared, "HIT", time.time())
            outcome = await self._fetch(exchange, primary, entry, settings, store=False)
        assert outcome is not None
        if isinstance(outcome, Stored):
            self._uncacheable.pop(primary, None)
            status = (
                outcome.outcome if entry is None or outcome.outcome == "REVALIDATED" else "EXPIRED"
            )
            return self._serve(exchange, outcome.entry, status, time.time())
        now = time.time()
        if isinstance(outcome, Failed):
            if entry is not None and may_serve_stale_on_error(entry, directives, now):
                return self._serve(exchange, entry, "STALE", now)
            exchange.cache_status = "ERROR"
            self._metrics.cache_operation("error")
            return self._client.failure_response(exchange, outcome.failure)
        if outcome.reason != "collapsed-fallback":
            self._remember_uncacheable(primary)
        upstream = outcome.upstream
        if (
            upstream.status in SERVER_ERRORS
            and entry is not None
            and may_serve_stale_on_error(entry, directives, now)
        ):
            upstream.close()
            return self._serve(exchange, entry, "STALE", now)
        exchange.cache_status = "MISS"
        self._metrics.cache_operation("miss")
        exchange.add_response_header(
            "Cache-Status", f"OpenFlare; fwd=miss; detail={outcome.reason}"
        )
        return await self._client.relay(exchange, upstream, outcome.prefix, outcome.complete)

    def _recently_uncacheable(self, primary: str) -> bool:
        until = self._uncacheable.get(primary)
        if until is None:
            return False
        if until < time.monotonic():
            del self._uncacheable[primary]
            return False
        return True

    def _remember_uncacheable(self, primary: str) -> None:
        memo = self._uncacheable
        memo[primary] = time.monotonic() + HIT_FOR_MISS_SECONDS
        memo.move_to_end(primary)
        if len(memo) > HIT_FOR_MISS_MAX_KEYS:
            memo.popitem(last=False)

    def _refresh_in_background(
        self, exchange: Exchange, primary: str, entry: CacheEntry, settings: RuleSettings
    ) -> None:
        flight_key = primary + "\0" + entry.key
        if self._flights.in_flight(flight_key):
            return
        task = self._flights.start(
            flight_key, lambda: self._fetch(exchange, primary, entry, settings)
        )
        task.add_done_callback(_close_unclaimed)

    async def _fetch(
        self,
        exchange: Exchange,
        primary: str,
        stale: CacheEntry | None,
        settings: RuleSettings,
        store: bool = True,
    ) -> Outcome:
        conditional: tuple[tuple[str, str], ...] = ()
        if stale is not None:
            validators = []
            if stale.etag:
                validators.append(("If-None-Match", stale.etag))
            if stale.last_modified:
                validators.append(("If-Modified-Since", stale.last_modified))
            conditional = tuple(validators)
        request_time = time.time()
        try:
            upstream = await self._client.open(exchange, for_cache=True, extra_headers=conditional)
        except UpstreamFailure as failure:
            return Failed(failure)
        except RequestBodyError as error:  # not reachable for GET/HEAD without body
            return Failed(UpstreamFailure("none", "protocol", error.status, str(error)))
        response_time = time.time()
        if upstream.status == 304 and stale is not None:
            upstream.release()
            refreshed = self._refreshed(stale, upstream, request_time, response_time, settings)
            await self._put(refreshed)
            return Stored(refreshed, "REVALIDATED")
        if not store:
            return Passthrough(upstream, b"", "collapsed-fallback")
        request_cc = _request_cc(exchange)
        response_cc = response_cache_control(upstream.headers)
        reason = storable_reason(
            status=upstream.status,
            request_cc=request_cc,
            response_cc=response_cc,
            headers=upstream.headers,
            has_authorization="Authorization" in exchange.request.headers,
            rule_ttl=settings.ttl,
            store_set_cookie=settings.store_set_cookie,
        )
        if reason is not None:
            return Passthrough(upstream, b"", reason)
        reservation = _Reservation(self._store)
        try:
            body = await self._collect(exchange, upstream, reservation)
            if not isinstance(body, bytes):
                return body
            upstream.release()
            stored, tags = self._stored_headers(upstream.headers)
            vary = vary_names(upstream.headers)
            entry = self._entry_from(
                key=variant_key(primary, vary, exchange.request.headers),
                primary=primary,
                status=upstream.status,
                reason=upstream.reason or "",
                headers=upstream.headers,
                cc=response_cc,
                stored=stored,
                body=body,
                request_time=request_time,
                response_time=response_time,
                age_value=parse_age(upstream.headers.get("Age")),
                settings=settings,
                vary=vary,
                tags=tags,
            )
            if not entry.useful():  # e.g. already expired and nothing to revalidate it with
                return Passthrough(upstream, body, "no-freshness", complete=True)
        finally:
            reservation.close()  # the entry's own size is counted by the store from here on
        await self._put(entry)
        return Stored(entry, "STORE")

    async def _collect(
        self, exchange: Exchange, upstream: UpstreamResponse, reservation: _Reservation
    ) -> bytes | Passthrough | Failed:
        """The whole body, its bytes reserved against the store's budget while they are read;
        or why it is not stored (too large, no room, cut short)."""
        limit = self._config.max_object_bytes
        length = upstream.content_length
        if length is not None and length > limit:
            return Passthrough(upstream, b"", "too-large")
        if length is not None and not reservation.grow(length):
            return Passthrough(upstream, b"", "no-room")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in upstream.content.iter_any():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    return Passthrough(upstream, b"".join(chunks), "too-large")
                if size > reservation.nbytes and not reservation.grow(
                    max(size - reservation.nbytes, RESERVE_STEP_BYTES)
                ):
                    return Passthrough(upstream, b"".join(chunks), "no-room")
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
            upstream.close()  # cut short by the origin: never stored, never shared
            self._metrics.upstream_error(upstream_name_of(exchange), "reset")
            return Failed(
                UpstreamFailure(
                    upstream_name_of(exchange),
                    "reset",
                    502,
                    "Bad Gateway (origin closed the connection mid-body)",
                )
            )
        if len(chunks) == 1:
            return chunks[0]
        # joining holds the chunks and their copy at once: that copy is reserved too
        if not reservation.grow(size):
            return Passthrough(upstream, b"".join(chunks), "no-room", complete=True)
        return b"".join(chunks)

    def _stored_headers(self, headers: CIMultiDictProxy[str]) -> tuple[bytes, tuple[str, ...]]:
        """The origin's headers as stored, one block of lines (hop-by-hop, Set-Cookie and the
        like removed), and the purge tags they carry."""
        tags: list[str] = []
        stored: list[tuple[str, str]] = []
        for name, value in client_response_headers(headers):
            lower = name.lower()
            if lower in NOT_STORED_HEADERS:
                continue
            if lower in self._tag_headers:
                tags.extend(t for t in value.replace(",", " ").split() if t)
                if self._strip_tags:
                    continue
            stored.append((name, value))
        return render_headers(stored), tuple(dict.fromkeys(tags))

    def _entry_from(
        self,
        *,
        key: str,
        primary: str,
        status: int,
        reason: str,
        headers: MultiMapping[str],
        cc: CacheControl,
        stored: bytes,
        body: bytes,
        request_time: float,
        response_time: float,
        age_value: float,
        settings: RuleSettings,
        vary: tuple[str, ...],
        tags: tuple[str, ...],
        hits: int = 0,
    ) -> CacheEntry:
        """A stored response: `headers` (the response's, or the stored ones a 304 updated) and
        their Cache-Control `cc` decide freshness, validators and shareability."""
        fresh = freshness(
            cc,
            headers,
            response_time,
            status=status,
            rule_ttl=settings.ttl,
            origin_wins=settings.origin_wins,
            heuristic=self._config.heuristic_freshness,
            default_swr=settings.stale_while_revalidate,
            default_sie=settings.stale_if_error,
        )
        return CacheEntry(
            key=key,
            primary=primary,
            status=status,
            reason=sys.intern(reason),  # "OK": one string for all entries
            headers=stored,
            body=body,
            request_time=request_time,
            response_time=response_time,
            date_value=http_date(headers.get("Date")),
            age_value=age_value,
            lifetime=fresh.lifetime,
            stale_while_revalidate=fresh.stale_while_revalidate,
            stale_if_error=fresh.stale_if_error,
            must_revalidate="must-revalidate" in cc or "proxy-revalidate" in cc,
            no_cache="no-cache" in cc,
            auth_shareable="public" in cc or "s-maxage" in cc or "must-revalidate" in cc,
            vary=vary,
            tags=tags,
            freshness_source=fresh.source,
            hits=hits,
        )

    def _refreshed(
        self,
        stale: CacheEntry,
        upstream: UpstreamResponse,
        request_time: float,
        response_time: float,
        settings: RuleSettings,
    ) -> CacheEntry:
        """The stored response with the 304's header fields (RFC 9111 §4.3.4) and new times."""
        merged = CIMultiDict(parse_headers(stale.headers))
        updates = [
            (name, value)
            for name, value in client_response_headers(upstream.headers)
            if name.lower() not in NOT_UPDATED_BY_304 and name.lower() not in NOT_STORED_HEADERS
        ]
        for name in {name for name, _ in updates}:
            merged.popall(name, None)
        for name, value in updates:
            merged.add(name, value)
        return self._entry_from(
            key=stale.key,
            primary=stale.primary,
            status=stale.status,
            reason=stale.reason,
            headers=merged,
            cc=response_cache_control(merged),
            stored=render_headers(merged.items()),
            body=stale.body,
            request_time=request_time,
            response_time=response_time,
            age_value=parse_age(upstream.headers.get("Age")),
            settings=settings,
            vary=stale.vary,
            tags=stale.tags,
            hits=stale.hits,
        )

    async def _put(self, entry: CacheEntry) -> None:
        try:
            await self._store.put(entry)
        except Exception:  # the response is still served; only storing failed
            self._metrics.cache_operation("error")

    # --- admin -------------------------------------------------------------------------------

    @property
    def waits(self) -> bool:
        """Every lookup waits for the store (Redis): no request is tried inline."""
        return self._store.waits

    @property
    def store(self) -> CacheStore:
        return self._store

    def url_base(self, url: str) -> str:
        """The URL part of the cache key for `url` (`purge {"url"}`), or ValueError."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("url must be absolute: http(s)://host/path")
        path = normalize_path(parts.path or "/", self._normalization)
        settings = self._rules.match(path, "GET")
        query = settings.key.query(parts.query)
        return f"{parts.scheme}://{parts.netloc.lower()}{path}" + (f"?{query}" if query else "")

    # --- invalidation (RFC 9111 §4.4) --------------------------------------------------------

    async def _invalidate(self, exchange: Exchange, response: web.StreamResponse) -> None:
        origin = f"{exchange.request.scheme}://{exchange.host}"
        urls = [origin + exchange.path + ("?" + exchange.query if exchange.query else "")]
        for name in ("Location", "Content-Location"):
            value = response.headers.get(name)
            if not value:
                continue
            parts = urlsplit(value)
            if parts.netloc and parts.netloc.lower() != exchange.host.lower():
                continue  # only same-origin URIs (§4.4)
            if parts.path.startswith("/"):
                urls.append(origin + parts.path + ("?" + parts.query if parts.query else ""))
        for url in dict.fromkeys(urls):
            try:
                removed = await self._store.purge_url(self.url_base(url), soft=False)
            except ValueError:
                continue  # a Location the normalizer refuses names nothing we stored
            except Exception:
                self._metrics.cache_operation("error")
                continue
            if removed:
                self._metrics.cache_operation("invalidate")


class _Reservation:
    """Bytes of one body being collected for storage, reserved against the store's budget."""

    __slots__ = ("_store", "nbytes")

    def __init__(self, store: CacheStore) -> None:
        self._store = store
        self.nbytes = 0

    def grow(self, nbytes: int) -> bool:
        if not self._store.reserve(nbytes):
            return False
        self.nbytes += nbytes
        return True

    def close(self) -> None:
        if self.nbytes:
            self._store.release(self.nbytes)
            self.nbytes = 0


def _request_cc(exchange: Exchange) -> CacheControl:
    return parse_cache_control(exchange.request.headers.getall("Cache-Control", []))


def upstream_name_of(exchange: Exchange) -> str:
    return exchange.route.upstream if exchange.route is not None else "none"


def _close_unclaimed(task: asyncio.Task[Outcome]) -> None:
    """A background refresh that ended in a passthrough: no one will read that response."""
    if task.cancelled() or task.exception() is not None:
        return
    outcome = task.result()
    if isinstance(outcome, Passthrough):
        outcome.upstream.close()


class TracedCacheStage(CacheStage):
    """The cache stage with `cache.lookup` and `cache.store` child spans under the stage's
    `cache` span. `build` composes it only when tracing is on, so with tracing off no span
    code runs at all (the plain CacheStage)."""

    __slots__ = ("_tracer",)

    def __init__(
        self, bundle: ConfigBundle, deps: Deps, client: UpstreamClient, tracer: Tracer
    ) -> None:
        super().__init__(bundle, deps, client)
        self._tracer = tracer

    async def _lookup(self, primary: str, exchange: Exchange) -> CacheEntry | None:
        with self._tracer.start_as_current_span("cache.lookup") as span:
            entry = await super()._lookup(primary, exchange)
            if span.is_recording():
                span.set_attributes(
                    {
                        "openflare.cache.key_hash": key_hash(primary),
                        "openflare.cache.store": self._store.kind,
                        "openflare.cache.lookup.result": "found" if entry else "absent",
                    }
                )
                if entry is not None:
                    span.set_attribute("openflare.cache.entry.age", int(entry.age(time.time())))
            return entry

    async def _put(self, entry: CacheEntry) -> None:
        with self._tracer.start_as_current_span("cache.store") as span:
            if span.is_recording():
                span.set_attributes(
                    {
                        "openflare.cache.key_hash": key_hash(entry.primary),
                        "openflare.cache.store": self._store.kind,
                        "openflare.cache.store.decision": "stored",
                        "openflare.cache.store.reason": entry.freshness_source,
                        "openflare.cache.store.bytes": entry.size,
                    }
                )
            await super()._put(entry)

    async def _fetch(
        self,
        exchange: Exchange,
        primary: str,
        stale: CacheEntry | None,
        settings: RuleSettings,
        store: bool = True,
    ) -> Outcome:
        outcome = await super()._fetch(exchange, primary, stale, settings, store)
        if isinstance(outcome, Stored) or (
            isinstance(outcome, Passthrough) and outcome.reason == "collapsed-fallback"
        ):
            return outcome  # stored: the span is _put's; a waiter's own fetch decides nothing
        reason = outcome.reason if isinstance(outcome, Passthrough) else outcome.failure.kind
        with self._tracer.start_as_current_span("cache.store") as span:
            if span.is_recording():
                span.set_attributes(
                    {
                        "openflare.cache.key_hash": key_hash(primary),
                        "openflare.cache.store": self._store.kind,
                        "openflare.cache.store.decision": "not-stored",
                        "openflare.cache.store.reason": reason,
                    }
                )
        return outcome


def key_hash(primary: str) -> str:
    """A short, stable digest of a cache key for span attributes (never the raw URL)."""
    return hashlib.sha256(primary.encode()).hexdigest()[:16]


def build(bundle: ConfigBundle, deps: Deps) -> CacheStage | None:
    if not bundle.proxy.cache.enabled:
        return None
    client = build_client(bundle, deps)  # the forward stage's client (one per runtime)
    tracing, _ = tracing_for(bundle.proxy.tracing, on_export=deps.metrics.export_result)
    if tracing is None:
        return CacheStage(bundle, deps, client)
    return TracedCacheStage(bundle, deps, client, tracing.tracer)
