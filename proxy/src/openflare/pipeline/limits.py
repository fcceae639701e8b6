"""Stage 4 — size limits: URI (414), header bytes and count (431), declared body size (413);
and header values that are not valid UTF-8 (400, see below).

A body sent with `Transfer-Encoding: chunked` has no declared size: the forward stage counts it
while streaming it to the origin and answers 413 as soon as it passes the limit, without ever
buffering it. aiohttp's own parser limits are set a little above these (see app.py), so up to
that point the client gets the precise status from here, and beyond it a plain 400."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from aiohttp import web

from openflare.pipeline.base import Exchange, Handler, answered, plain_error

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.observability.metrics import Metrics


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class LimitsStage:
    __slots__ = ("_max_uri", "_max_header_bytes", "_max_header_count", "_max_body", "_metrics")

    def __init__(
        self,
        max_uri: int,
        max_header_bytes: int,
        max_header_count: int,
        max_body: int,
        metrics: Metrics,
    ) -> None:
        self._max_uri = max_uri
        self._max_header_bytes = max_header_bytes
        self._max_header_count = max_header_count
        self._max_body = max_body
        self._metrics = metrics

    def __call__(self, exchange: Exchange, next: Handler) -> Awaitable[web.StreamResponse]:
        request = exchange.request
        if len(request.raw_path) > self._max_uri:
            return self._refuse(
                exchange, 414, "uri_too_long", "URI Too Long", len(request.raw_path), self._max_uri
            )
        raw_headers = request.raw_headers
        if len(raw_headers) > self._max_header_count:
            return self._refuse(
                exchange,
                431,
                "too_many_headers",
                "Request Header Fields Too Large",
                len(raw_headers),
                self._max_header_count,
            )
        header_bytes = 0
        for name, value in raw_headers:
            header_bytes += len(name) + len(value) + 4
            if not value.isascii() and not _is_utf8(value):
                # obs-text that is not UTF-8 cannot be forwarded byte-exact by aiohttp's writer
                # (it would silently drop those bytes), so it is refused instead of altered
                return self._refuse(exchange, 400, "header_not_utf8", "Bad Request")
        if header_bytes > self._max_header_bytes:
            return self._refuse(
                exchange,
                431,
                "headers_too_large",
                "Request Header Fields Too Large",
                header_bytes,
                self._max_header_bytes,
            )
        declared = request.content_length
        if declared is not None and declared > self._max_body:
            return self._refuse(
                exchange, 413, "body_too_large", "Content Too Large", declared, self._max_body
            )
        return next(exchange)  # nothing to do on the way out (see pipeline/base.py)

    def _refuse(
        self,
        exchange: Exchange,
        status: int,
        reason: str,
        message: str,
        size: int | None = None,
        limit: int | None = None,
    ) -> Awaitable[web.StreamResponse]:
        self._metrics.reject("limits", reason)
        exchange.error = reason
        if exchange.trace is not None:  # a traced request (pipeline/explain.py): say why
            exchange.trace.note_refusal("limits", status, reason, size=size, limit=limit)
        response = plain_error(exchange, status, message)
        response.force_close()  # the rest of an oversized request is not worth reading
        return answered(response)


def build(bundle: ConfigBundle, deps: Deps) -> LimitsStage:
    server, security = bundle.proxy.server, bundle.proxy.security
    return LimitsStage(
        server.max_uri_bytes,
        server.max_header_bytes,
        server.max_header_count,
        security.max_request_body_bytes,
        deps.metrics,
    )
