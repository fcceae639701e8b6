"""What every stage shares: the per-request `Exchange`, the `Stage` protocol, and `compose`.

A stage is `async def __call__(self, exchange, next) -> web.StreamResponse`: it may answer by
itself (a 403, a cache hit) or call `next(exchange)` and look at what comes back. A stage with
nothing to do on the way out may be a plain `def` that returns `next(exchange)` (or
`answered(response)`) unawaited: one coroutine frame less per request. Stages are
built once per runtime from config (`build(bundle, deps)`), and `compose` folds the stage list
into a single handler, so the request path does no lookups of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from aiohttp import web

from openflare.handover import in_a_task
from openflare.pipeline.inline import LeanRequest
from openflare.pipeline.stored_response import RenderedResponse, StoredResponse

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.pipeline.explain import DecisionTrace
    from openflare.routing import Route

Handler = Callable[["Exchange"], Awaitable[web.StreamResponse]]
SERVER_NAME = "openflare"  # on responses the edge makes itself (never aiohttp's version)
# the headers of a `plain_error` answer
PLAIN_ERROR_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "Cache-Control": "no-store",
    "Server": SERVER_NAME,
}


class Stage(Protocol):
    # an `async def`, or a plain `def` that returns `next(exchange)` (no frame of its own).
    # A stage whose every request waits (a store in Redis) says so with a `waits` property:
    # requests are then not tried inline (runtime.py, pipeline/inline.py).
    def __call__(self, exchange: Exchange, next: Handler) -> Awaitable[web.StreamResponse]: ...


class Terminal(Protocol):
    async def __call__(self, exchange: Exchange) -> web.StreamResponse: ...


StageFactory = Callable[["ConfigBundle", "Deps"], Stage | None]


class Exchange:
    """One request's state as it moves through the pipeline; what the access log reports."""

    __slots__ = (
        "request",
        "started",
        "request_id",
        "peer_ip",
        "client_ip",
        "method",
        "host",
        "path",
        "query",
        "route",
        "upstream_status",
        "upstream_ms",
        "cache_status",
        "cache_ttl",
        "cache_age",
        "waf",
        "ratelimit",
        "error",
        "bytes_sent",
        "response",
        "debug_headers",
        "extra_headers",
        "body_prefix",
        "cache_bypass",
        "continue_sent",
        "span",
        "trace",
    )

    def __init__(
        self,
        request: web.BaseRequest | LeanRequest,
        started: float,
        debug_headers: bool,
        peer_ip: str | None = None,
    ) -> None:
        """`peer_ip`: the connection's peer address when the caller already knows it (app.py
        keeps it per connection); otherwise it is asked of the transport.

        `request` is a `LeanRequest` while the chain runs inline, in the read callback
        (pipeline/inline.py); what only aiohttp's request has is behind `full_request`."""
        self.request = request
        self.started = started
        self.request_id = ""
        if peer_ip is None:
            peer_ip = Exchange.peer_address(request.transport)
        self.peer_ip = peer_ip
        self.client_ip = peer_ip
        self.method = request.method
        self.host = request.headers.get("Host", "")
        self.path = ""  # normalized path, set by the normalize stage
        self.query = ""  # raw query string exactly as the client sent it
        self.route: Route | None = None
        self.upstream_status = 0
        self.upstream_ms = -1.0
        self.cache_status = ""
        self.cache_ttl: int | None = None
        self.cache_age: int | None = None
        self.waf = ""
        self.ratelimit = ""
        self.error = ""
        self.bytes_sent = 0
        self.response: web.StreamResponse | None = None  # set once headers are sent
        self.debug_headers = debug_headers
        # headers a stage wants on the response (e.g. RateLimit-*), applied by finalize_headers
        self.extra_headers: list[tuple[str, str]] | None = None
        # request-body bytes a stage already read (e.g. the WAF's inspection window); the
        # forward stage sends them first, then streams the rest, so the origin gets it all
        self.body_prefix = b""
        self.cache_bypass = False  # set by a WAF `bypass_cache` action
        self.continue_sent = False
        self.span: Span | None = None  # the request's SERVER span, only while tracing is on
        # the decision trace (pipeline/explain.py): None unless this request is explained
        self.trace: DecisionTrace | None = None

    @staticmethod
    def peer_address(transport: asyncio.BaseTransport | None) -> str:
        """The peer's IP address ("0.0.0.0" without one: a closed or Unix-socket transport)."""
        peer = transport.get_extra_info("peername") if transport is not None else None
        return peer[0] if peer else "0.0.0.0"

    async def full_request(self) -> web.BaseRequest:
        """aiohttp's request (its body, its `prepare` for a streamed answer); an inline run
        stops here and aiohttp's handler continues it with that request (pipeline/inline.py)."""
        request = self.request
        if type(request) is LeanRequest:
            await in_a_task()
            request = self.request  # Handover.resume put aiohttp's request here
            if type(request) is LeanRequest:  # a task the request's own handler never ran
                raise RuntimeError("aiohttp's request is only reachable from its handler")
        return cast(web.BaseRequest, request)

    async def send_continue(self) -> None:
        """Answer `Expect: 100-continue` once, when a stage is about to read the body."""
        request = await self.full_request()
        if (
            not self.continue_sent
            and request.version >= (1, 1)
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            self.continue_sent = True
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def read_body_prefix(self, limit: int, read_timeout: float) -> bytes:
        """Read up to `limit` bytes of the request body for inspection, once; the forward
        stage sends these bytes first and streams the rest, so nothing is lost or cut."""
        if self.body_prefix or not self.request.body_exists:
            return self.body_prefix
        await self.send_continue()
        content = (await self.full_request()).content
        buffer = bytearray()
        async with asyncio.timeout(read_timeout):
            while len(buffer) < limit:
                chunk = await content.read(limit - len(buffer))
                if not chunk:
                    break
                buffer += chunk
        self.body_prefix = bytes(buffer)
        return self.body_prefix

    def add_response_header(self, name: str, value: str) -> None:
        if self.extra_headers is None:
            self.extra_headers = []
        self.extra_headers.append((name, value))

    def finalize_headers(self, response: web.StreamResponse) -> None:
        """Stage 14: the headers every response carries, set just before they are sent."""
        headers = response.headers
        headers["X-Request-ID"] = self.request_id
        if "Server" not in headers and not (
            isinstance(response, StoredResponse) and response.holds_server
        ):  # else aiohttp adds its name and version
            headers["Server"] = SERVER_NAME
        if self.extra_headers:
            for name, value in self.extra_headers:
                headers[name] = value
        if self.debug_headers and self.cache_status:
            headers["X-Edge-Cache"] = self.cache_status
            if self.cache_ttl is not None:
                headers["X-Edge-Cache-TTL"] = str(self.cache_ttl)
            if self.cache_age is not None:
                headers["X-Edge-Cache-Age"] = str(self.cache_age)
        if self.trace is not None:  # Server-Timing, X-Edge-Trace
            self.trace.apply_headers(self, headers)

    async def start_response(self, response: web.StreamResponse) -> None:
        """Send the status line and headers of a streamed response."""
        request = await self.full_request()
        self.finalize_headers(response)
        self.response = response
        await response.prepare(request)

    async def send(self, response: web.StreamResponse) -> None:
        """Send a complete (not yet prepared) response, body included."""
        if response.prepared:
            return
        if isinstance(response, StoredResponse):  # from the cache, or the edge's own: one write
            self.finalize_headers(response)
            self.response = response
            response.send_now(self.request)
            self.bytes_sent = response.body_bytes_sent
            protocol = self.request.protocol
            if protocol.writing_paused:  # the client reads slower than we write: wait for it
                await self.request._payload_writer.drain()
        else:
            await self.start_response(response)
            await response.write_eof()
            # body bytes, as for streamed ones (a HEAD answer's Content-Length is not sent)
            self.bytes_sent = 0 if self.method == "HEAD" else response.content_length or 0


class _Link:
    """One stage bound to what follows it. `run` is a plain method (a bound method is the
    cheapest thing to call, about half a `functools.partial` with a keyword argument), and it
    returns the stage's awaitable without awaiting it, so a link adds no coroutine frame."""

    __slots__ = ("_call", "_next")

    def __init__(self, stage: Stage, next: Handler) -> None:
        self._call = stage.__call__
        self._next = next

    def run(self, exchange: Exchange) -> Awaitable[web.StreamResponse]:
        return self._call(exchange, self._next)


def compose(stages: Sequence[Stage], terminal: Terminal) -> Handler:
    """Fold `stages` around `terminal`: the first stage is the outermost."""
    handler: Handler = terminal
    for stage in reversed(stages):
        handler = _Link(stage, handler).run
    return handler


async def answered(response: web.StreamResponse) -> web.StreamResponse:
    """The awaitable a plain-`def` stage returns when it answers by itself."""
    return response


def plain_error(exchange: Exchange, status: int, message: str) -> RenderedResponse:
    """A short text error that carries the request id, for 4xx/5xx the edge produces itself."""
    return RenderedResponse(
        status,
        f"{status} {message}\nrequest_id: {exchange.request_id}\n".encode(),
        PLAIN_ERROR_HEADERS,
    )
