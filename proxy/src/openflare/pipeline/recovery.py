"""Stage 3 — panic recovery: an exception in any later stage becomes a 500 carrying the
request ID, is logged with its traceback and counted; the process and other requests go on.

If the response had already started streaming, a 500 can no longer be sent: the connection is
dropped instead, so the client sees a truncated response rather than a wrong one."""

from __future__ import annotations

import asyncio
import traceback
from typing import TYPE_CHECKING

from aiohttp import web

from openflare.pipeline.base import Exchange, Handler, plain_error

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics


class RecoveryStage:
    __slots__ = ("_log", "_metrics")

    def __init__(self, log: LogWriter, metrics: Metrics) -> None:
        self._log = log
        self._metrics = metrics

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        try:
            return await next(exchange)
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception as exc:
            self._metrics.panics.inc()
            exchange.error = f"panic: {type(exc).__name__}"
            self._log.event(
                "error",
                "panic",
                request_id=exchange.request_id,
                method=exchange.method,
                path=exchange.path or exchange.request.raw_path[:256],
                error=repr(exc)[:512],
                traceback=traceback.format_exc(limit=20),
            )
            if exchange.response is not None:
                transport = exchange.request.transport
                if transport is not None:
                    transport.abort()
                return exchange.response
            return plain_error(exchange, 500, "Internal Server Error")


def build(bundle: ConfigBundle, deps: Deps) -> RecoveryStage:
    return RecoveryStage(deps.log, deps.metrics)
