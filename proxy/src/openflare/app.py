"""The public listener: aiohttp's low-level server with one handler for every request.

There is no router and no aiohttp middleware here on purpose: aiohttp freezes those at startup,
while OpenFlare's pipeline is rebuilt on every reload. The handler reads the current runtime
once and hands the request to its composed stage chain (runtime.py).

Connection-level defences live here too, in `EdgeRequestHandler` (docs/05-threat-model.md):
a cap on open connections (`server.max_connections`, a short 503 beyond it), a deadline for
each request head (`server.header_timeout_ms`, slowloris), a deadline for a client that stops
reading a response (`server.write_timeout_ms`), and cancellation of a request's handler when
its client leaves, so nothing keeps an upstream connection for a client that is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from openflare.observability.metrics import Metrics
from openflare.pipeline.base import SERVER_NAME, Exchange
from openflare.pipeline.inline import Handover, LeanRequest, start_inline
from openflare.runtime import RuntimeHolder

if TYPE_CHECKING:
    from openflare.config.models import ServerConfig

# aiohttp's parser is the hard cap: nothing past it is ever buffered. The caps are fixed at
# the largest values the config accepts (models.py), so a reload may raise any limit; the
# limits stage enforces the configured values with 414/431 below them.
PARSER_MAX_LINE = 65_536 + 1024  # ServerConfig.max_uri_bytes ≤ 65 536
PARSER_MAX_FIELD = 1_048_576 + 1024  # ServerConfig.max_header_bytes ≤ 1 MiB
PARSER_MAX_HEADERS = 1000 + 32  # ServerConfig.max_header_count ≤ 1000


FIRST_MESSAGE_RETAIN = 64 * 1024  # bytes kept to re-parse a first request with a rare method
# a target whose request was handed over and not stored goes straight to aiohttp this many
# times (it is likely a pass-through or a refusal again, and trying it inline costs 3-17 %),
# then is tried inline again; the memo of such targets is dropped whole when it is full
INLINE_RETRY_AFTER = 16
INLINE_SKIP_TARGETS = 4096
# cache outcomes after which the next request for the target is not expected to be a HIT
NOT_STORED = frozenset({"", "MISS", "BYPASS", "ERROR"})
REFUSED_LINGER_SECONDS = 1.0  # an over-cap connection: time for the 503 to be read, then closed
LINGER_SECONDS = 2.0


def _edge_response(status: int, detail: str, extra: str = "") -> bytes:
    """A complete response written straight to the transport (no request object exists)."""
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase} ({detail})\n".encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nServer: {SERVER_NAME}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
        f"{extra}Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


InlineHandler = Callable[[LeanRequest], tuple[Exchange, Awaitable[web.StreamResponse]]]


TOO_MANY_CONNECTIONS = _edge_response(503, "too many connections", "Retry-After: 1\r\n")
HEAD_TIMEOUT = _edge_response(408, "request head not received in time")


class MethodFallbackParser:
    """aiohttp's C parser (llhttp) only knows registered methods; RFC 9110 allows any token.
    Until a connection's first request is parsed its bytes are kept, and if llhttp refuses the
    method, that connection switches to aiohttp's Python parser, which accepts any token. Every
    other connection keeps the fast parser.

    Once the choice is made, `on_settled` (if given) receives the parser that stays, so the
    connection can call it directly from then on instead of through this wrapper."""

    def __init__(
        self, fast: Any, make_slow: Any, on_settled: Callable[[Any], None] | None = None
    ) -> None:
        self._active = fast
        self._make_slow = make_slow
        self._on_settled = on_settled
        self._seen: bytearray | None = bytearray()

    def feed_data(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        seen = self._seen
        if seen is None:
            return self._active.feed_data(data, *args, **kwargs)
        seen += data
        try:
            result = self._active.feed_data(data, *args, **kwargs)
        except BadHttpMethod:
            self._settle(self._make_slow())
            return self._active.feed_data(bytes(seen), *args, **kwargs)
        if result[0] or len(seen) > FIRST_MESSAGE_RETAIN:
            self._settle(self._active)
        return result

    def _settle(self, parser: Any) -> None:
        self._seen = None
        self._active = parser
        if self._on_settled is not None:
            self._on_settled(parser)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._active, name)


def refusal_reason(exc: BadHttpMessage, status: int) -> str:
    """A short fixed phrase for a parser refusal: never an echo of the client's bytes."""
    if status == 414:
        return "request line too long"
    if status == 431:
        return "request header fields too large"
    if "Host" in str(exc):
        return "missing or invalid Host header"
    if isinstance(exc, BadHttpMethod):
        return "invalid method"
    if isinstance(exc, InvalidURLError):
        return "invalid request target"
    if isinstance(exc, BadStatusLine):
        return "invalid request line"
    if isinstance(exc, InvalidHeader):
        return "invalid header field"
    if isinstance(exc, PayloadEncodingError):
        return "invalid body framing"
    return "malformed request"


class EdgeRequestHandler(RequestHandler):
    """aiohttp's connection handler: requests its parser refuses get RFC statuses (414 for
    the request line, 431 for headers, 400 otherwise) in the edge's own short format (no
    echo of the request, no library version), and are counted; rare methods get a second
    chance with the Python parser (MethodFallbackParser)."""

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        loop = kwargs["loop"]

        def python_parser() -> Any:
            return HttpRequestParserPy(
                self,
                loop,
                2**16,
                max_line_size=PARSER_MAX_LINE,
                max_field_size=PARSER_MAX_FIELD,
                max_headers=PARSER_MAX_HEADERS,
                payload_exception=web.RequestPayloadError,
                auto_decompress=False,
            )

        self._parser = MethodFallbackParser(  # type: ignore[assignment]
            self._parser, python_parser, self._parser_settled
        )
        self._edge = manager if isinstance(manager, EdgeServer) else None
        # requests without a body run inline, in data_received (pipeline/inline.py)
        self._inline = self._edge.inline if self._edge is not None else None
        self._handover: Handover | None = None  # an inline run waiting for aiohttp's handler
        self._resumed: Handover | None = None  # the one aiohttp's handler is continuing
        # aiohttp holds a request of this connection (made by EdgeServer._make_request) until
        # its answer is complete: requests after it wait their turn in aiohttp's queue
        self._answering = False
        self._held_back = False  # a parse of pipelined requests aiohttp held back is scheduled
        self._scheme = "http"
        self._refused = False  # over server.max_connections: answered 503, never served
        self._head_timeout = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_seen = 0  # request heads parsed when the head timer was armed
        self._head_bytes = 0  # bytes received since then
        self._write_timeout = 0.0
        self._write_timer: asyncio.TimerHandle | None = None
        self.write_timed_out = False  # read by the forward stage for the access log
        # the peer's address, asked of the transport once per connection (not per request);
        # None while there is no connection
        self.peer_ip: str | None = None

    def _parser_settled(self, parser: Any) -> None:
        """After the first request head: the parser that stays, called without the wrapper
        (aiohttp also calls `message_consumed` on it per request, which the wrapper could
        only forward through `__getattr__`)."""
        if self._parser is not None:  # None once the connection is lost
            self._parser = parser

    # --- connection cap --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer_ip = Exchange.peer_address(transport)
        self._scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        edge = self._edge
        if edge is None:
            super().connection_made(transport)
            return
        settings = edge.settings()
        if 0 < settings.max_connections <= edge.open_connections():
            self._refuse_connection(transport, edge)
            return
        self._head_timeout = settings.header_timeout_ms / 1000
        self._write_timeout = settings.write_timeout_ms / 1000
        super().connection_made(transport)
        self._arm_head_timer()

    def _refuse_connection(self, transport: asyncio.BaseTransport, edge: EdgeServer) -> None:
        self._refused = True
        edge.metrics.reject("server", "max_connections")
        transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio subclass
        transport.write(TOO_MANY_CONNECTIONS)
        if transport.can_write_eof():
            transport.write_eof()  # FIN after the 503; whatever the client sends is discarded
        self._loop.call_later(REFUSED_LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if (  # run inline only when nothing is before these bytes and the client reads
            self._inline is None
            or self._answering
            or self._messages
            or self._handover is not None
            or self._paused
            or self._upgraded
        ):
            super().data_received(data)
        else:
            waiter = self._waiter  # start() parked on it, or between requests (None)
            if waiter is not None:
                self._waiter = None  # aiohttp parses and queues, but does not wake start()
                try:
                    super().data_received(data)
                finally:
                    self._waiter = waiter
            else:
                super().data_received(data)
            if self._messages:
                self._answer_inline(waiter)
        if self._edge is not None:
            self._watch_head(len(data))

    # --- inline answers (pipeline/inline.py) ------------------------------------------------

    def _answer_inline(self, waiter: asyncio.Future[None] | None) -> None:
        """Run the queued requests without a body inline, in order, while each finishes
        there; the first that does not (or has a body, or is an error or upgrade) and all
        after it are left to aiohttp's start(), woken as aiohttp would have woken it."""
        messages = self._messages
        edge = self._edge
        # None when the runtime in force waits for a store anyway (Runtime.inline)
        skips = edge.inline_skips if edge is not None and edge.inline_allowed() else None
        while skips is not None and messages:
            message, payload = messages[0]
            if payload is not EMPTY_PAYLOAD or isinstance(message, _ErrInfo) or message.upgrade:
                break
            left = skips.get(message.path)
            if left is not None:  # lately handed over and not stored: straight to aiohttp
                if left > 1:
                    skips[message.path] = left - 1
                    break
                # this one is tried inline; the target's next requests skip while it runs
                # (on other connections too), and its outcome renews or ends the memo
                skips[message.path] = INLINE_RETRY_AFTER
            if not self._run_inline(message):
                break  # handed over: aiohttp makes its request for it, the handler resumes
            if left is not None:
                skips.pop(message.path, None)  # the trial was answered inline
            messages.popleft()
            if self._parser is not None:
                self._parser.message_consumed()
            if self._force_close or self._close or self._paused:
                break
        if messages:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # else start() finds them before it parks again
        elif self._buffer_paused and not self._held_back:
            # aiohttp's parser held pipelined requests back (32 at a time): parse them on the
            # next turn of the loop, so one client's pipeline neither recurses through here
            # nor keeps the loop from every other connection
            self._held_back = True
            self._loop.call_soon(self._parse_held_back)

    def _parse_held_back(self) -> None:
        """Feed the parser's held-back bytes (aiohttp's own resume: it parses the next batch,
        which runs inline, and resumes reading once the queue is short)."""
        self._held_back = False
        if self.transport is not None and not self._messages and not self._upgraded:
            self._resume_reading_if_drained()

    def _run_inline(self, message: Any) -> bool:
        """True when the request was answered; False when it waits in `self._handover`."""
        inline = self._inline
        assert inline is not None
        request = LeanRequest(message, self, StreamWriter(self, self._loop), self._scheme)
        outcome = start_inline(partial(inline, request), message)
        if isinstance(outcome, Handover):
            self._handover = outcome
            return False
        manager = self._manager
        if manager is not None:
            manager.requests_count += 1
        # what start() does after a response (aiohttp's web_protocol.py)
        if outcome.keep_alive and not self._close and not self._force_close and self.transport:
            self._keepalive = True
            loop = self._loop
            close_time = loop.time() + self._keepalive_timeout
            self._next_keepalive_close_time = close_time
            if self._keepalive_handle is None:
                self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)
        else:
            self._keepalive = False
            self.force_close()  # the answer is written; the transport closes after it
        return True

    async def _handle_request(
        self,
        request: web.BaseRequest,
        start_time: float | None,
        request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        """aiohttp's, then: once its answer is complete and the connection stays open, the
        next requests may run inline again (until then they queue behind it, in order)."""
        response, reset = await super()._handle_request(request, start_time, request_handler)
        resumed = self._resumed
        if resumed is not None:  # it started inline: was it worth trying?
            self._resumed = None
            if self._edge is not None:
                skips = self._edge.inline_skips
                if resumed.cache_status() in NOT_STORED:
                    if len(skips) >= INLINE_SKIP_TARGETS:
                        skips.clear()
                    skips[request._message.path] = INLINE_RETRY_AFTER
                else:
                    skips.pop(request._message.path, None)
        if not reset and response.keep_alive:
            self._answering = False
        return response, reset

    def take_handover(self, request: web.BaseRequest) -> Handover | None:
        """The inline run of `request`'s message, if it stopped and waits for this handler."""
        handover = self._handover
        if handover is None or handover.message is not request._message:
            return None
        self._handover = None
        self._resumed = handover
        return handover

    def connection_lost(self, exc: BaseException | None) -> None:
        self.peer_ip = None  # as before: a request whose client left sees no peer
        handover = self._handover
        if handover is not None:  # start() never reached it: cancel it as a handler would be
            self._handover = None
            handover.abandon()
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None
        if self._refused:
            self.transport = None
            return
        super().connection_lost(exc)

    # --- request head deadline (slowloris) -------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._heads_seen = self._request_count
        self._head_bytes = 0
        self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)

    def _watch_head(self, received: int) -> None:
        """After each read: a head completed disarms the timer; the first bytes of the next
        request on an idle keep-alive connection arm it again."""
        if self._request_count != self._heads_seen:
            self._heads_seen = self._request_count
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
        elif self._head_timer is not None:
            self._head_bytes += received
        elif received and self._waiter is not None and not self._waiter.done():
            self._arm_head_timer()
            self._head_bytes = received

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._request_count != self._heads_seen:
            return
        if self._edge is not None:
            self._edge.metrics.reject("server", "header_timeout")
        if self._head_bytes:
            transport.write(HEAD_TIMEOUT)  # a client that sent nothing gets no answer at all
        self.force_close()

    # --- response write deadline (a client that does not read) -----------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timeout and self._write_timer is None:
            self._write_timer = self._loop.call_later(self._write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        transport = self.transport
        if transport is None:
            return
        self.write_timed_out = True
        if self._edge is not None:
            self._edge.metrics.reject("server", "write_timeout")
        transport.abort()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status = 414 if exc.args[1] == self.max_line_size else 431
        elif "Too many headers" in str(exc):
            status = 431
        server = self._manager
        if isinstance(server, EdgeServer):
            server.refused(status, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send a parser error")
        response = web.Response(
            status=status,
            text=f"{status} {HTTPStatus(status).phrase}\n{refusal_reason(exc, status)}\n",
            headers={"Server": SERVER_NAME, "Cache-Control": "no-store"},
        )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        error = kw.get("exc_info")
        if isinstance(error, BadHttpMessage):
            return  # client garbage: counted and logged once by EdgeServer.refused
        super().log_exception(*args, **kw)


class EdgeServer(web.Server):
    def __init__(
        self,
        handler: Any,
        metrics: Metrics,
        settings: Callable[[], ServerConfig] | None = None,
        inline: InlineHandler | None = None,
        inline_allowed: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.metrics = metrics
        self._settings = settings
        self.inline = inline  # runs a request without a body in data_received; None: never
        # targets not tried inline for their next requests (INLINE_RETRY_AFTER)
        self.inline_skips: dict[str, int] = {}
        # whether the runtime in force allows it (runtime.py `Runtime.inline`)
        self.inline_allowed = inline_allowed or (lambda: inline is not None)

    def settings(self) -> ServerConfig:
        """The `server` section in force now (connection limits follow reloads)."""
        if self._settings is None:
            from openflare.config.models import ServerConfig

            return ServerConfig()
        return self._settings()

    def open_connections(self) -> int:
        return len(self._connections)

    def __call__(self) -> RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)

    def _make_request(
        self,
        message: Any,
        payload: Any,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        """aiohttp's request for a message it took from its queue: from now until its answer
        is complete, no request of that connection runs inline (it would answer first)."""
        if type(protocol) is EdgeRequestHandler:
            protocol._answering = True
        return super()._make_request(message, payload, protocol, writer, task)

    def refused(self, status: int, exc: BadHttpMessage) -> None:
        reason = {414: "uri_too_long", 431: "headers_too_large"}.get(status, "bad_request")
        self.metrics.reject("parser", reason)


def create_public_server(holder: RuntimeHolder, metrics: Metrics) -> EdgeServer:
    monotonic = time.monotonic

    def handle(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        protocol = request.protocol
        if type(protocol) is EdgeRequestHandler and protocol._handover is not None:
            handover = protocol.take_handover(request)
            if handover is not None:  # its chain started inline: go on from where it stopped
                return handover.resume(request)
        runtime = holder.runtime  # read once: a reload mid-request does not switch chains
        # the chain's awaitable itself (aiohttp awaits it): no coroutine frame of our own
        peer_ip = getattr(protocol, "peer_ip", None)  # EdgeRequestHandler's
        return runtime.handler(Exchange(request, monotonic(), runtime.debug_headers, peer_ip))

    def inline(request: LeanRequest) -> tuple[Exchange, Awaitable[web.StreamResponse]]:
        runtime = holder.runtime
        peer_ip = getattr(request.protocol, "peer_ip", None)  # EdgeRequestHandler's
        exchange = Exchange(request, monotonic(), runtime.debug_headers, peer_ip)
        return exchange, runtime.handler(exchange)

    return EdgeServer(
        handle,
        metrics,
        lambda: holder.runtime.bundle.proxy.server,
        inline=inline,
        inline_allowed=lambda: holder.runtime.inline,
        handler_cancellation=True,  # a client that leaves cancels its request (frees upstream)
        # after an early answer (408, 413...) the unread rest of a body is drained this long
        # so the client can read the answer before the close; aiohttp's default is 10 s
        lingering_time=LINGER_SECONDS,
        max_line_size=PARSER_MAX_LINE,
        max_field_size=PARSER_MAX_FIELD,
        max_headers=PARSER_MAX_HEADERS,
        keepalive_timeout=holder.runtime.bundle.proxy.server.idle_timeout_ms / 1000,
        access_log=None,
    )
