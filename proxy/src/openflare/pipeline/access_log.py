"""Stage 2 — access log and request metrics.

Wraps everything after it. On the way out it sends the response if a later stage returned one
without streaming it (so `bytes_sent` is exact), then writes one JSON line and updates the
request counters. A client that leaves early is logged with `error: client_disconnected`."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from openflare.observability.logging import utc_timestamp
from openflare.pipeline.base import Exchange, Handler

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics


class AccessLogStage:
    __slots__ = ("_log", "_metrics", "_enabled")

    def __init__(self, log: LogWriter, metrics: Metrics, enabled: bool) -> None:
        self._log = log
        self._metrics = metrics
        self._enabled = enabled

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        metrics = self._metrics
        metrics.in_flight_now += 1
        status = 0
        try:
            response = await next(exchange)
            status = response.status
            try:
                await exchange.send(response)
            except ConnectionResetError:
                exchange.error = exchange.error or "client_disconnected"
            return response
        except asyncio.CancelledError:
            exchange.error = exchange.error or "cancelled"
            raise
        finally:
            metrics.in_flight_now -= 1
            if not status:  # no response object came back: report what the client got
                status = exchange.response.status if exchange.response is not None else 500
            self._record(exchange, status)

    def _record(self, exchange: Exchange, status: int) -> None:
        duration = time.monotonic() - exchange.started
        route = exchange.route.id if exchange.route is not None else "none"
        metrics = self._metrics
        metrics.request_child(route, exchange.method, status).inc()
        latency, sent = metrics.route_children(route)
        latency.observe(duration)
        sent.inc(exchange.bytes_sent)
        if not self._enabled:
            return
        self._log.write_line(
            orjson.dumps(
                {
                    "time": utc_timestamp(),
                    "event": "access",
                    "request_id": exchange.request_id,
                    "client_ip": exchange.client_ip,
                    "method": exchange.method,
                    "host": exchange.host,
                    # refused before normalization: the raw path, never the query (secrets)
                    "path": exchange.path or exchange.request.raw_path.partition("?")[0][:2048],
                    "status": status,
                    "bytes_sent": exchange.bytes_sent,
                    "duration_ms": round(duration * 1000, 3),
                    "route": route,
                    "upstream": exchange.route.upstream if exchange.route is not None else None,
                    "upstream_status": exchange.upstream_status or None,
                    "upstream_ms": exchange.upstream_ms if exchange.upstream_ms >= 0 else None,
                    "cache": exchange.cache_status or None,
                    "waf": exchange.waf or None,
                    "ratelimit": exchange.ratelimit or None,
                    "error": exchange.error or None,
                }
            )
            + b"\n"
        )


def build(bundle: ConfigBundle, deps: Deps) -> AccessLogStage:
    return AccessLogStage(deps.log, deps.metrics, bundle.proxy.logging.access_log)
