"""The public listener: aiohttp's low-level server with one handler for every request.

There is no router and no aiohttp middleware here on purpose: aiohttp freezes those at startup,
while OpenFlare's pipeline is rebuilt on every reload. The handler reads the current runtime
once and hands the request to its composed stage chain (runtime.py).
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.web_protocol import RequestHandler

from openflare.observability.metrics import Metrics
from openflare.pipeline.base import SERVER_NAME, Exchange
from openflare.runtime import RuntimeHolder

# aiohttp's parser is the hard cap: nothing past it is ever buffered. The caps are fixed at
# the largest values the config accepts (models.py), so a reload may raise any limit; the
# limits stage enforces the configured values with 414/431 below them.
PARSER_MAX_LINE = 65_536 + 1024  # ServerConfig.max_uri_bytes ≤ 65 536
PARSER_MAX_FIELD = 1_048_576 + 1024  # ServerConfig.max_header_bytes ≤ 1 MiB
PARSER_MAX_HEADERS = 1000 + 32  # ServerConfig.max_header_count ≤ 1000


FIRST_MESSAGE_RETAIN = 64 * 1024  # bytes kept to re-parse a first request with a rare method


class MethodFallbackParser:
    """aiohttp's C parser (llhttp) only knows registered methods; RFC 9110 allows any token.
    Until a connection's first request is parsed its bytes are kept, and if llhttp refuses the
    method, that connection switches to aiohttp's Python parser, which accepts any token. Every
    other connection keeps the fast parser."""

    def __init__(self, fast: Any, make_slow: Any) -> None:
        self._active = fast
        self._make_slow = make_slow
        self._seen: bytearray | None = bytearray()

    def feed_data(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        seen = self._seen
        if seen is None:
            return self._active.feed_data(data, *args, **kwargs)
        seen += data
        try:
            result = self._active.feed_data(data, *args, **kwargs)
        except BadHttpMethod:
            self._seen = None
            self._active = self._make_slow()
            return self._active.feed_data(bytes(seen), *args, **kwargs)
        if result[0] or len(seen) > FIRST_MESSAGE_RETAIN:
            self._seen = None
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._active, name)


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

        self._parser = MethodFallbackParser(self._parser, python_parser)  # type: ignore[assignment]

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
            text=f"{status} {HTTPStatus(status).phrase}\n",
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
    def __init__(self, handler: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.metrics = metrics

    def __call__(self) -> RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)

    def refused(self, status: int, exc: BadHttpMessage) -> None:
        reason = {414: "uri_too_long", 431: "headers_too_large"}.get(status, "bad_request")
        self.metrics.reject("parser", reason)


def create_public_server(holder: RuntimeHolder, metrics: Metrics) -> EdgeServer:
    monotonic = time.monotonic

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        runtime = holder.runtime
        return await runtime.handler(Exchange(request, monotonic(), runtime.debug_headers))

    return EdgeServer(
        handle,
        metrics,
        max_line_size=PARSER_MAX_LINE,
        max_field_size=PARSER_MAX_FIELD,
        max_headers=PARSER_MAX_HEADERS,
        keepalive_timeout=holder.runtime.bundle.proxy.server.idle_timeout_ms / 1000,
        access_log=None,
    )
