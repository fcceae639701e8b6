"""Stage 1 — request identity.

The request ID is a UUID v4, or the client's `X-Request-ID` when it is short and safe
(`[A-Za-z0-9._-]{1,64}`); it is echoed on the response and forwarded upstream. The client IP is
resolved here, once, by the proxy's one resolver (see clientip.py), for every later stage."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aiohttp import web

from openflare.clientip import ClientIpResolver
from openflare.pipeline.base import Exchange, Handler

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps

SAFE_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
MAX_ID_LENGTH = 64


def is_safe_request_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and not value.strip(SAFE_ID_CHARS)


def new_request_id() -> str:
    """A random UUID v4 in canonical form (about 4x cheaper than `str(uuid.uuid4())`)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RequestIdStage:
    __slots__ = ("_resolver",)

    def __init__(self, resolver: ClientIpResolver) -> None:
        self._resolver = resolver

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        headers = exchange.request.headers
        offered = headers.get("X-Request-ID")
        exchange.request_id = (
            offered if offered is not None and is_safe_request_id(offered) else new_request_id()
        )
        if self._resolver.trusts_anyone:
            exchange.client_ip = self._resolver.resolve(
                exchange.peer_ip, ",".join(headers.getall("X-Forwarded-For", ()))
            )
        return await next(exchange)


def build(bundle: ConfigBundle, deps: Deps) -> RequestIdStage:
    security = bundle.proxy.security
    return RequestIdStage(
        ClientIpResolver(security.trusted_proxies, trust_all=security.trust_x_forwarded_for)
    )
