"""Application factory and the admin endpoints (``/healthz``, ``/__hits``, ``/__fail``,
``/__reset``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import api, auth, cache_routes, echo, robustness, site
from .common import GET_HEAD, json_response
from .connection import capture_server_cycle
from .middleware import OriginMiddleware
from .state import OriginState, origin_state

FAIL_MODES = "'off', 'close' or a status code 500-599"


class OriginApp(FastAPI):
    """FastAPI app whose ASGI entry point records the server's request cycle (for
    connection-level faults) and whose middleware stack is wrapped by
    :class:`OriginMiddleware`, outside Starlette's error middleware so that even
    unhandled-exception 500s are stamped."""

    def build_middleware_stack(self) -> ASGIApp:
        return OriginMiddleware(super().build_middleware_stack(), self.state.origin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            capture_server_cycle(scope, send)
        await super().__call__(scope, receive, send)


def _error_body(status: int, detail: Any) -> dict[str, Any]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return {"error": phrase, "status": status, "detail": detail}


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code in (204, 304) or exc.status_code < 200:
        return Response(status_code=exc.status_code, headers=headers)
    return json_response(
        request, _error_body(exc.status_code, exc.detail), exc.status_code, headers
    )


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
    return json_response(request, _error_body(422, detail), 422)


async def _unhandled_handler(request: Request, exc: Exception) -> Response:
    return json_response(request, _error_body(500, f"{type(exc).__name__}: {exc}"), 500)


def create_app() -> FastAPI:
    """Build a fresh application with its own :class:`OriginState`."""
    app = OriginApp(
        title="OpenFlare test origin",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.origin = OriginState()
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _unhandled_handler)

    @app.api_route("/healthz", methods=GET_HEAD)
    async def healthz(request: Request) -> JSONResponse:
        return json_response(request, {"status": "ok"}, 200, {"cache-control": "no-store"})

    @app.api_route("/__hits", methods=GET_HEAD)
    async def hits(request: Request, path: str | None = None) -> JSONResponse:
        counter = origin_state(request).hits
        headers = {"cache-control": "no-store"}
        if path is not None:
            return json_response(request, {"path": path, "hits": counter.get(path)}, 200, headers)
        snapshot = counter.snapshot()
        return json_response(
            request, {"hits": snapshot, "total": sum(snapshot.values())}, 200, headers
        )

    @app.post("/__hits/reset")
    async def hits_reset(request: Request) -> JSONResponse:
        origin_state(request).hits.reset()
        return json_response(request, {"reset": True}, 200, {"cache-control": "no-store"})

    @app.api_route("/__fail", methods=["GET", "HEAD", "POST"])
    async def fail_switch(request: Request, mode: str | None = Query(None)) -> JSONResponse:
        state = origin_state(request)
        if request.method == "POST":
            if mode is None:
                raise HTTPException(400, f"mode is required: {FAIL_MODES}")
            if mode == "off":
                state.fail_mode = None
            elif mode == "close" or (mode.isdigit() and 500 <= int(mode) <= 599):
                state.fail_mode = mode
            else:
                raise HTTPException(400, f"mode must be {FAIL_MODES}")
        return json_response(
            request,
            {"mode": state.fail_mode or "off", "active": state.fail_mode is not None},
            200,
            {"cache-control": "no-store"},
        )

    @app.post("/__reset")
    async def reset_all(request: Request) -> JSONResponse:
        origin_state(request).reset()
        return json_response(request, {"reset": True}, 200, {"cache-control": "no-store"})

    for module in (site, cache_routes, auth, api, echo, robustness):
        app.include_router(module.router)
    app.router.routes.append(Route("/debug/echo", echo.DebugEcho(), name="debug_echo"))
    app.router.routes.append(
        Route("/debug/echo/{rest:path}", echo.DebugEcho(), name="debug_echo_any")
    )
    return app
