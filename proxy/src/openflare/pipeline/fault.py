"""Test-only fault injection, enabled by `server.fault_injection: true` (never in production
configs). `/__openflare/fault/raise` raises inside the pipeline so the E2E suite can prove the
recovery stage turns a crash into a 500 and the process keeps serving."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from openflare.pipeline.base import Exchange, Handler

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps

FAULT_PREFIX = "/__openflare/fault/"


class InjectedFault(RuntimeError):
    pass


class FaultStage:
    __slots__ = ()

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        if exchange.path == FAULT_PREFIX + "raise":
            raise InjectedFault("fault injected by request")
        return await next(exchange)


def build(bundle: ConfigBundle, deps: Deps) -> FaultStage | None:
    return FaultStage() if bundle.proxy.server.fault_injection else None
