"""Stage 2 — access log, request metrics and (when tracing is on) the request's SERVER span.

Wraps everything after it. On the way out it sends the response if a later stage returned one
without streaming it (so `bytes_sent` is exact), then writes one JSON line and updates the
request counters. A client that leaves early is logged with `error: client_disconnected`.

With tracing on, `build` returns `TracedAccessLogStage` instead: it opens the SERVER span
(continuing an incoming `traceparent`), makes it current for the stages after it, adds
`trace_id` / `span_id` to the access line and the trace id as an exemplar to the latency
histogram. With tracing off the plain stage runs and none of that code is reached."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from openflare.observability.logging import utc_timestamp
from openflare.observability.metrics import CACHE_STATUSES
from openflare.observability.tracing import span_ids, tracing_for
from openflare.pipeline.base import Exchange, Handler

monotonic = time.monotonic

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics
    from openflare.observability.tracing import Tracing


def sent_status(exchange: Exchange) -> int:
    """When no response object came back: the status the client got, if headers went out."""
    return exchange.response.status if exchange.response is not None else 500


class AccessLogStage:
    """One `__call__` for both: with tracing off (`_tracing` is None) the span code is two
    `is not None` checks and nothing else."""

    __slots__ = ("_log", "_metrics", "_enabled", "_tracing")

    def __init__(self, log: LogWriter, metrics: Metrics, enabled: bool) -> None:
        self._log = log
        self._metrics = metrics
        self._enabled = enabled
        self._tracing: Tracing | None = None

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        tracing = self._tracing
        span: Any = None
        token: Any = None
        if tracing is not None:
            span, token = tracing.start_server_span(exchange)
            exchange.span = span
        metrics = self._metrics
        metrics.in_flight_now += 1  # a plain int; the gauge reads it at scrape time
        status = 0
        error: BaseException | None = None
        try:
            response = await next(exchange)
            status = response.status
            try:
                await exchange.send(response)
            except ConnectionResetError:
                exchange.error = exchange.error or "client_disconnected"
            return response
        except BaseException as exc:  # recovery turns exceptions into 500s; this is the rest
            error = exc
            if isinstance(exc, asyncio.CancelledError):
                exchange.error = exchange.error or cancelled_reason(exchange)
            raise
        finally:
            metrics.in_flight_now -= 1
            status = status or sent_status(exchange)
            if tracing is None:
                self._record(exchange, status)
            else:
                self._record_traced(exchange, status, tracing, span, token, error)

    def _record_traced(
        self,
        exchange: Exchange,
        status: int,
        tracing: Tracing,
        span: Any,
        token: Any,
        error: BaseException | None,
    ) -> None:
        ids = span_ids(span)
        if ids is None:
            self._record(exchange, status)
        else:
            trace_id, span_id, sampled = ids
            # an exemplar must point at a trace that exists: sampled ones only
            exemplar = {"trace_id": trace_id, "span_id": span_id} if sampled else None
            self._record(exchange, status, exemplar, (trace_id, span_id))
        tracing.end_server_span(exchange, span, token, status, error)

    def _record(
        self,
        exchange: Exchange,
        status: int,
        exemplar: dict[str, str] | None = None,
        trace: tuple[str, str] | None = None,
    ) -> None:
        duration = monotonic() - exchange.started
        route_used = exchange.route
        route = route_used.id if route_used is not None else "none"
        metrics = self._metrics
        metrics.request_child(route, exchange.method, status).inc()
        latency, sent, by_cache_status = metrics.route_children(route)
        latency.observe(duration, exemplar)
        bytes_sent = exchange.bytes_sent
        sent.inc(bytes_sent)
        cache_status = exchange.cache_status
        if cache_status:
            label = cache_status if cache_status in CACHE_STATUSES else "OTHER"
            by_cache_status[label] = by_cache_status.get(label, 0) + 1
        if status >= 400 and (exchange.waf or exchange.ratelimit):
            metrics.recent_events.note(exchange, status)  # WAF blocks, rate-limit refusals
        if not self._enabled:
            return
        upstream_ms = exchange.upstream_ms
        line: dict[str, Any] = {
            "time": utc_timestamp(),
            "event": "access",
            "request_id": exchange.request_id,
            "client_ip": exchange.client_ip,
            "method": exchange.method,
            "host": exchange.host,
            # refused before normalization: the raw path, never the query (secrets)
            "path": exchange.path or exchange.request.raw_path.partition("?")[0][:2048],
            "status": status,
            "bytes_sent": bytes_sent,
            "duration_ms": round(duration * 1000, 3),
            "route": route,
            "upstream": route_used.upstream if route_used is not None else None,
            "upstream_status": exchange.upstream_status or None,
            "upstream_ms": upstream_ms if upstream_ms >= 0 else None,
            "cache": cache_status or None,
            "waf": exchange.waf or None,
            "ratelimit": exchange.ratelimit or None,
            "error": exchange.error or None,
        }
        if trace is not None:
            line["trace_id"], line["span_id"] = trace
        if exchange.trace is not None and exchange.trace.record is not None:
            line["decision_trace"] = exchange.trace.record  # pipeline/explain.py
        # (not OPT_APPEND_NEWLINE: its output keeps orjson's oversized buffer, and the line
        # lives in the writer's queue for a while; `+` makes a compact copy, measured faster)
        self._log.write_line(orjson.dumps(line) + b"\n")


class TracedAccessLogStage(AccessLogStage):
    """The access-log stage with the request's SERVER span around everything after it (the
    shared `AccessLogStage.__call__`, with `_tracing` set)."""

    __slots__ = ()

    def __init__(self, log: LogWriter, metrics: Metrics, enabled: bool, tracing: Tracing) -> None:
        super().__init__(log, metrics, enabled)
        self._tracing = tracing


def cancelled_reason(exchange: Exchange) -> str:
    """Why a request was cancelled: its client left (app.py cancels the handler then), or the
    process is shutting down."""
    return "client_disconnected" if exchange.request.transport is None else "cancelled"


def build(bundle: ConfigBundle, deps: Deps) -> AccessLogStage:
    enabled = bundle.proxy.logging.access_log
    tracing, _ = tracing_for(bundle.proxy.tracing, on_export=deps.metrics.export_result)
    if tracing is None:
        return AccessLogStage(deps.log, deps.metrics, enabled)
    return TracedAccessLogStage(deps.log, deps.metrics, enabled, tracing)
