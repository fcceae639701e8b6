"""Stage 8 — route selection by host and longest path prefix (see routing.py).
Nothing matched and no default upstream: 404 with a body that says so."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from aiohttp import web

from openflare.pipeline.base import Exchange, Handler, answered, plain_error
from openflare.routing import Router

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.observability.metrics import Metrics


class RouteStage:
    __slots__ = ("_router", "_metrics")

    def __init__(self, router: Router, metrics: Metrics) -> None:
        self._router = router
        self._metrics = metrics

    def __call__(self, exchange: Exchange, next: Handler) -> Awaitable[web.StreamResponse]:
        route = self._router.select(exchange.host, exchange.path)
        if exchange.trace is not None:
            exchange.trace.note_route(route)
        if route is None:
            self._metrics.reject("route", "no_route")
            exchange.error = "no_route"
            return answered(
                plain_error(exchange, 404, "Not Found (no route matches this host and path)")
            )
        exchange.route = route
        return next(exchange)  # nothing to do on the way out (see pipeline/base.py)


def build(bundle: ConfigBundle, deps: Deps) -> RouteStage:
    return RouteStage(Router(bundle.proxy.routing), deps.metrics)
