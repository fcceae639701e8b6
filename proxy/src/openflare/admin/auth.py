"""Bearer-token check for `/admin/*`, in constant time, with failed attempts rate-limited.

A client IP that sent `admin_api.auth_failure_limit` wrong tokens within
`admin_api.auth_failure_window_ms` gets 429 with `Retry-After` on every `/admin/*` request
until its window ends — a correct token too, or the lockout would tell a guesser when it
guessed right. Requests with no `Authorization` at all are refused with 401 but not counted.
The table of client IPs is bounded (`AuthFailures.MAX_CLIENTS`, oldest forgotten first).

There is one table per process (`Deps.auth_failures`), shared with the decision trace's token
header on the public listener (pipeline/explain.py): a wrong token sent to either counts
against both, and a client locked out by one is locked out of the other. Client IPs are keyed
in one form (`client_key`: an IPv4-mapped IPv6 address counts as its IPv4 address).
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from openflare.observability.logging import LogWriter
    from openflare.runtime import RuntimeHolder

ADMIN_PREFIX = "/admin/"


def json_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


MAX_OFFERED_TOKEN = 4096  # characters of an offered token compared at all (see secret_matches)


def secret_matches(offered: str | None, expected: str | None) -> bool:
    """`offered` is the admin token, compared in constant time (also used by the decision
    trace's token header, pipeline/explain.py). An offer longer than `MAX_OFFERED_TOKEN` (and
    than the token) is wrong without being compared, so a huge header costs no more than a
    short one. Never raises: a header value aiohttp decoded with surrogate escapes (bytes that
    are not UTF-8) is encoded back as they were (`surrogatepass`) and simply does not match."""
    if not expected or not offered:
        return False
    if len(offered) > MAX_OFFERED_TOKEN and len(offered) > len(expected) + 64:
        return False
    return hmac.compare_digest(
        offered.strip().encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def client_key(ip: str | None) -> str:
    """The one spelling of a client IP in the failure table: `::ffff:192.0.2.1` (an IPv4 peer on
    a dual-stack socket) is `192.0.2.1`; no address at all is `unknown`."""
    if not ip:
        return "unknown"
    if ip[:7].lower() == "::ffff:" and "." in ip:
        return ip[7:]
    return ip


def token_matches(header: str | None, expected: str | None) -> bool:
    if not expected or not header:
        return False
    scheme, _, offered = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return secret_matches(offered, expected)


class AuthFailures:
    """Failed authentications per client IP in fixed windows; a bounded LRU table."""

    MAX_CLIENTS = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clients: OrderedDict[str, tuple[float, int]] = OrderedDict()  # ip → (start, n)

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after(self, client: str, limit: int, window: float) -> int:
        """Seconds until `client` may try again; 0 when it is not locked out."""
        client = client_key(client)
        entry = self._clients.get(client)
        if entry is None or limit <= 0:
            return 0
        start, failures = entry
        remaining = start + window - self._clock()
        if remaining <= 0:
            del self._clients[client]
            return 0
        return math.ceil(remaining) if failures >= limit else 0

    def failed(self, client: str, window: float) -> int:
        """Count one failure; the client's failures in its current window."""
        client = client_key(client)
        now = self._clock()
        start, failures = self._clients.pop(client, (now, 0))
        if start + window <= now:
            start, failures = now, 0
        self._clients[client] = (start, failures + 1)
        while len(self._clients) > self.MAX_CLIENTS:
            self._clients.popitem(last=False)
        return failures + 1


def admin_auth_middleware(
    holder: RuntimeHolder, log: LogWriter | None = None, failures: AuthFailures | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """`failures`: the process's shared table (`Deps.auth_failures`); a private one if None."""
    table = failures if failures is not None else AuthFailures()

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        bundle = holder.runtime.bundle
        admin = bundle.proxy.admin_api
        if not admin.enabled:
            return json_error(404, "admin_api_disabled", "the admin API is disabled in config")
        client = request.remote or "unknown"
        window = admin.auth_failure_window_ms / 1000
        wait = table.retry_after(client, admin.auth_failure_limit, window)
        if wait:
            response = json_error(
                429, "too_many_auth_failures", "too many failed authentications; retry later"
            )
            response.headers["Retry-After"] = str(wait)
            return response
        offered = request.headers.get("Authorization")
        if not token_matches(offered, bundle.admin_token):
            if offered is not None and admin.auth_failure_limit > 0:
                count = table.failed(client, window)
                if count == admin.auth_failure_limit and log is not None:
                    log.event(
                        "warning",
                        "admin_auth_locked",
                        client_ip=client,
                        failures=count,
                        window_ms=admin.auth_failure_window_ms,
                    )
            response = json_error(401, "unauthorized", "send Authorization: Bearer <admin token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="openflare-admin"'
            return response
        return await handler(request)

    return middleware
