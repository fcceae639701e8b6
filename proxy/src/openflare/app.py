"""The public listener: aiohttp's low-level server with one handler for every request.

There is no router and no aiohttp middleware here on purpose: aiohttp freezes those at startup,
while OpenFlare's pipeline is rebuilt on every reload. The handler reads the current runtime
once and hands the request to its composed stage chain (runtime.py).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from openflare.config.models import ServerConfig
from openflare.pipeline.base import Exchange
from openflare.runtime import RuntimeHolder

# aiohttp's parser is the hard cap (nothing past it is ever buffered); it sits a little above
# OpenFlare's limits so that the limits stage sees every request up to there, and
# `EdgeRequestHandler` turns the parser's own refusals into 414/431 instead of a bare 400.
PARSER_HEADROOM = 1024


class EdgeRequestHandler(RequestHandler):
    """aiohttp's connection handler with RFC statuses for requests its parser refuses."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, LineTooLong):
            status = 414 if exc.args[1] == self.max_line_size else 431
        elif isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc):
            status = 431
        return super().handle_error(request, status, exc, message)


class EdgeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


def public_server_kwargs(server: ServerConfig) -> dict[str, Any]:
    return {
        "max_line_size": server.max_uri_bytes + PARSER_HEADROOM,
        # +1 keeps the two limits distinct, which is how a refusal tells URI from header
        "max_field_size": server.max_header_bytes + PARSER_HEADROOM + 1,
        "max_headers": server.max_header_count + 32,
        "keepalive_timeout": server.idle_timeout_ms / 1000,
        "access_log": None,
    }


def create_public_server(holder: RuntimeHolder, server: ServerConfig) -> EdgeServer:
    monotonic = time.monotonic

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        runtime = holder.runtime
        return await runtime.handler(Exchange(request, monotonic(), runtime.debug_headers))

    return EdgeServer(handle, **public_server_kwargs(server))
