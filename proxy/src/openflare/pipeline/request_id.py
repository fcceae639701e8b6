"""Stage 1 — request identity.

The request ID is a UUID v4, or the client's `X-Request-ID` when it is short and safe
(`[A-Za-z0-9._-]{1,64}`); it is echoed on the response and forwarded upstream. The client IP is
resolved here, once, by the proxy's one resolver (see clientip.py), for every later stage."""

from __future__ import annotations

from collections.abc import Awaitable
from random import getrandbits
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


_VERSION_4 = 0x4 << 76  # version nibble in bits 76-79
_VARIANT_RFC = 0x2 << 62  # variant bits 62-63
_CLEAR = ~((0xF << 76) | (0x3 << 62))


def new_request_id() -> str:
    """A random UUID v4 in canonical form. Request ids need uniqueness, not secrecy: the
    process PRNG (seeded from the OS at start) avoids a syscall per request, and this is
    several times cheaper than `str(uuid.uuid4())` (`to_bytes().hex()`: cheaper than a format
    spec)."""
    h = ((getrandbits(128) & _CLEAR) | _VERSION_4 | _VARIANT_RFC).to_bytes(16).hex()  # 32 digits
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RequestIdStage:
    __slots__ = ("_resolver",)

    def __init__(self, resolver: ClientIpResolver) -> None:
        self._resolver = resolver

    def __call__(self, exchange: Exchange, next: Handler) -> Awaitable[web.StreamResponse]:
        headers = exchange.request.headers
        offered = headers.get("X-Request-ID")
        exchange.request_id = (
            offered if offered is not None and is_safe_request_id(offered) else new_request_id()
        )
        if self._resolver.trusts_anyone:
            exchange.client_ip = self._resolver.resolve(
                exchange.peer_ip, ",".join(headers.getall("X-Forwarded-For", ()))
            )
        return next(exchange)  # nothing to do on the way out (see pipeline/base.py)


def build(bundle: ConfigBundle, deps: Deps) -> RequestIdStage:
    security = bundle.proxy.security
    return RequestIdStage(
        ClientIpResolver(security.trusted_proxies, trust_all=security.trust_x_forwarded_for)
    )
