"""The public listener: aiohttp's low-level server with one handler for every request.

There is no router and no aiohttp middleware here on purpose: aiohttp freezes those at startup,
while OpenFlare's pipeline is rebuilt on every reload. The handler reads the current runtime
once and hands the request to its composed stage chain (runtime.py).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from openflare.config.models import ServerConfig
from openflare.pipeline.base import Exchange
from openflare.runtime import RuntimeHolder

# aiohttp's parser answers a bare 400 past its own limits; they sit this far above OpenFlare's
# so that up to there the limits stage gives the precise 414/431.
PARSER_HEADROOM = 1024


def public_server_kwargs(server: ServerConfig) -> dict[str, Any]:
    return {
        "max_line_size": server.max_uri_bytes + PARSER_HEADROOM,
        "max_field_size": server.max_header_bytes + PARSER_HEADROOM,
        "max_headers": server.max_header_count + 32,
        "keepalive_timeout": server.idle_timeout_ms / 1000,
        "access_log": None,
    }


def create_public_server(holder: RuntimeHolder, server: ServerConfig) -> web.Server:
    monotonic = time.monotonic

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        runtime = holder.runtime
        return await runtime.handler(Exchange(request, monotonic(), runtime.debug_headers))

    return web.Server(handle, **public_server_kwargs(server))
