"""Outermost ASGI middleware: response stamps, ``Date``, hit counting and the fail switch."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .common import http_date
from .connection import ConnectionControlUnavailable, drop_connection
from .state import OriginState, stamp_scope

#: Paths starting with this prefix are admin endpoints: never counted, never failed.
ADMIN_PREFIX = "/__"
UNCOUNTED_PATHS = frozenset({"/healthz"})
#: ``/cache/*`` paths the fail switch leaves alone (state-changing admin helpers).
FAIL_EXEMPT_PATHS = frozenset({"/cache/etag/bump", "/cache/last-modified/bump"})


def is_counted(path: str) -> bool:
    return not path.startswith(ADMIN_PREFIX) and path not in UNCOUNTED_PATHS


def raw_path_of(scope: Scope) -> str:
    """The request-target path exactly as received (latin-1), without the query."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes | bytearray):
        return bytes(raw).decode("latin-1")
    path = scope.get("path", "")
    return path if isinstance(path, str) else ""


class OriginMiddleware:
    """Wraps the whole application, including Starlette's ``ServerErrorMiddleware``.

    * adds ``X-Origin-Time`` / ``X-Origin-Seq`` (the stamp shared with JSON ``ts``/``seq``)
      and a ``Date`` derived from the same clock reading to every response;
    * adds ``Cache-Control: no-store`` to ``/api/*`` responses that set none;
    * counts requests per raw path (see :func:`is_counted`);
    * applies the ``/__fail`` switch to ``/cache/*``.
    """

    def __init__(self, app: ASGIApp, state: OriginState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if is_counted(path):
            self.state.hits.add(raw_path_of(scope))
        is_api = path.startswith("/api/")

        async def stamped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                stamp = stamp_scope(scope)
                headers = MutableHeaders(scope=message)
                headers["x-origin-time"] = stamp.ts
                headers["x-origin-seq"] = str(stamp.seq)
                if "date" not in headers:
                    headers["date"] = http_date(stamp.epoch)
                if is_api and "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            await send(message)

        fail_mode = self.state.fail_mode
        if fail_mode is not None and path.startswith("/cache/") and path not in FAIL_EXEMPT_PATHS:
            await self._fail(fail_mode, scope, receive, stamped_send)
            return
        await self.app(scope, receive, stamped_send)

    async def _fail(self, mode: str, scope: Scope, receive: Receive, send: Send) -> None:
        if mode == "close":
            try:
                await drop_connection(scope, reset=False)
                return
            except ConnectionControlUnavailable:
                status = 502
        else:
            status = int(mode)
        stamp = stamp_scope(scope)
        response = JSONResponse(
            {
                "ts": stamp.ts,
                "seq": stamp.seq,
                "error": "origin failure injected by /__fail",
                "status": status,
            },
            status_code=status,
            headers={"cache-control": "no-store"},
        )
        await response(scope, receive, send)
