"""Bearer-token check for `/admin/*`, in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from openflare.runtime import RuntimeHolder

ADMIN_PREFIX = "/admin/"


def json_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def token_matches(header: str | None, expected: str | None) -> bool:
    if not expected or not header:
        return False
    scheme, _, offered = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(offered.strip().encode(), expected.encode())


def admin_auth_middleware(holder: RuntimeHolder) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        bundle = holder.runtime.bundle
        if not bundle.proxy.admin_api.enabled:
            return json_error(404, "admin_api_disabled", "the admin API is disabled in config")
        if not token_matches(request.headers.get("Authorization"), bundle.admin_token):
            response = json_error(401, "unauthorized", "send Authorization: Bearer <admin token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="openflare-admin"'
            return response
        return await handler(request)

    return middleware
