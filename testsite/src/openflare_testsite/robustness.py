"""Slow, broken, huge and otherwise misbehaving responses for proxy robustness tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .common import (
    GET_HEAD,
    KIB,
    MIB,
    json_response,
    pattern_bytes,
    pattern_chunks,
    pattern_sha256_async,
    sleep_unless_disconnected,
    valid_header_value,
)
from .connection import connection_control_available, drop_connection
from .state import stamp_of

router = APIRouter()

MAX_DELAY_MS = 600_000
LARGE_MAX_SIZE = 256 * MIB
STREAM_MAX_CHUNKS = 100_000
STREAM_MAX_CHUNK_SIZE = 4 * MIB
HANG_SECONDS = 3600.0
#: Response framing headers ``/headers/set`` refuses to set (they would corrupt framing).
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

DelayMs = Annotated[int, Query(ge=0, le=MAX_DELAY_MS)]
Script = Callable[[Scope, Receive, Send], Awaitable[None]]


class ScriptedResponse(Response):
    """Sends ``http.response.start`` with the given headers, then runs ``script``.

    The script sends the body messages itself and may leave the response incomplete (it then
    closes or resets the connection through :mod:`openflare_testsite.connection`).
    """

    def __init__(self, status_code: int, headers: Mapping[str, str], script: Script) -> None:
        super().__init__(status_code=status_code, headers=dict(headers))
        self.script = script

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await self.script(scope, receive, send)


def _require_connection_control(request: Request) -> None:
    if not connection_control_available(request.scope):
        raise HTTPException(501, "needs a real uvicorn server (transport not exposed)")


@router.api_route("/slow", methods=GET_HEAD)
async def slow(request: Request, delay_ms: DelayMs = 1000) -> JSONResponse:
    started = time.monotonic()
    completed = await sleep_unless_disconnected(request, delay_ms / 1000)
    elapsed_ms = round((time.monotonic() - started) * 1000, 3)
    return json_response(
        request,
        {"delay_ms": delay_ms, "elapsed_ms": elapsed_ms, "completed": completed},
        200,
        {"cache-control": "no-store"},
    )


@router.api_route("/slow-body", methods=GET_HEAD)
async def slow_body(request: Request, delay_ms: DelayMs = 1000) -> Response:
    stamp = stamp_of(request)
    body = json.dumps(
        {"ts": stamp.ts, "seq": stamp.seq, "delay_ms": delay_ms, "body": "late"}
    ).encode()

    async def script(scope: Scope, receive: Receive, send: Send) -> None:
        await sleep_unless_disconnected(request, delay_ms / 1000)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "cache-control": "no-store",
    }
    return ScriptedResponse(200, headers, script)


@router.api_route(
    "/error/{code}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
)
async def error(request: Request, code: Annotated[int, Path(ge=200, le=599)]) -> Response:
    if code in (204, 304):
        return Response(status_code=code)
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return json_response(request, {"status": code, "reason": phrase, "error": code >= 400}, code)


@router.api_route("/large", methods=GET_HEAD)
async def large(
    request: Request,
    size: Annotated[int, Query(ge=0, le=LARGE_MAX_SIZE)] = MIB,
    cc: str | None = None,
) -> StreamingResponse:
    headers = {
        "content-length": str(size),
        "x-body-sha256": await pattern_sha256_async(size),
    }
    if cc is not None:
        if not valid_header_value(cc):
            raise HTTPException(400, "cc is not a valid header value")
        headers["cache-control"] = cc

    async def body() -> AsyncIterator[bytes]:
        for chunk in pattern_chunks(size):
            yield chunk

    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)


@router.api_route("/stream/chunked", methods=GET_HEAD)
async def stream_chunked(
    request: Request,
    chunks: Annotated[int, Query(ge=0, le=STREAM_MAX_CHUNKS)] = 5,
    size: Annotated[int, Query(ge=1, le=STREAM_MAX_CHUNK_SIZE)] = KIB,
    delay_ms: DelayMs = 0,
) -> StreamingResponse:
    total = chunks * size
    if total > LARGE_MAX_SIZE:
        raise HTTPException(400, f"chunks*size must be <= {LARGE_MAX_SIZE}")
    content = pattern_bytes(total) if total <= 16 * MIB else None

    async def body() -> AsyncIterator[bytes]:
        for index in range(chunks):
            if index and delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            start = index * size
            yield content[start : start + size] if content is not None else _slice(start, size)

    headers = {
        "x-body-sha256": await pattern_sha256_async(total),
        "x-chunk-count": str(chunks),
        "x-chunk-size": str(size),
        "cache-control": "no-store",
    }
    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)


def _slice(start: int, size: int) -> bytes:
    """Bytes ``[start, start+size)`` of the endless pattern stream."""
    offset = start % 64
    return pattern_bytes(offset + size)[offset:]


@router.api_route("/truncated", methods=GET_HEAD)
async def truncated(
    request: Request,
    declared: Annotated[int, Query(ge=1, le=LARGE_MAX_SIZE)] = 1000,
    sent: Annotated[int, Query(ge=0, le=LARGE_MAX_SIZE)] = 500,
    cc: str = "no-store",
) -> Response:
    if sent >= declared:
        raise HTTPException(400, "sent must be smaller than declared")
    _require_connection_control(request)
    body = pattern_bytes(sent)

    async def script(scope: Scope, receive: Receive, send: Send) -> None:
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await drop_connection(scope, reset=False)

    headers = {
        "content-type": "application/octet-stream",
        "content-length": str(declared),
        "cache-control": cc,
    }
    return ScriptedResponse(200, headers, script)


@router.api_route("/reset-mid-body", methods=GET_HEAD)
async def reset_mid_body(
    request: Request,
    size: Annotated[int, Query(ge=2, le=LARGE_MAX_SIZE)] = 64 * KIB,
    sent: Annotated[int | None, Query(ge=1)] = None,
    mode: Literal["rst", "fin", "exception"] = "rst",
    delay_ms: Annotated[int, Query(ge=0, le=10_000)] = 50,
) -> Response:
    """Declare ``size`` bytes, send ``sent`` (default ``size // 2``), then break the connection.

    ``rst``: SO_LINGER 0 + abort -> TCP RST. ``fin``: orderly close (FIN) like ``/truncated``.
    ``exception``: raise inside the streaming body; uvicorn logs the error and closes (FIN).
    """
    part = size // 2 if sent is None else sent
    if part >= size:
        raise HTTPException(400, "sent must be smaller than size")
    headers = {
        "content-length": str(size),
        "content-type": "application/octet-stream",
        "cache-control": "no-store",
    }
    body = pattern_bytes(part)
    if mode == "exception":

        async def failing() -> AsyncIterator[bytes]:
            yield body
            await asyncio.sleep(delay_ms / 1000)
            raise RuntimeError("reset-mid-body: deliberate failure after the first chunk")

        return StreamingResponse(failing(), headers=headers)
    _require_connection_control(request)

    async def script(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await drop_connection(scope, reset=mode == "rst", delay_s=delay_ms / 1000)

    return ScriptedResponse(200, headers, script)


@router.api_route("/upload", methods=["POST", "PUT"])
async def upload(request: Request) -> JSONResponse:
    started = time.monotonic()
    digest = hashlib.sha256()
    size = chunks = 0
    async for chunk in request.stream():
        if chunk:
            size += len(chunk)
            chunks += 1
            digest.update(chunk)
    return json_response(
        request,
        {
            "bytes": size,
            "sha256": digest.hexdigest(),
            "chunks": chunks,
            "content_type": request.headers.get("content-type"),
            "content_length": request.headers.get("content-length"),
            "elapsed_ms": round((time.monotonic() - started) * 1000, 3),
        },
        200,
        {"cache-control": "no-store"},
    )


@router.api_route("/headers/set", methods=GET_HEAD)
async def headers_set(request: Request) -> JSONResponse:
    applied: list[list[str]] = []
    skipped: list[list[str]] = []
    for name, value in request.query_params.multi_items():
        valid = _TOKEN_RE.match(name) is not None and valid_header_value(value)
        if not valid or name.lower() in FRAMING_HEADERS:
            skipped.append([name, value])
        else:
            applied.append([name, value])
    response = json_response(request, {"set": applied, "skipped": skipped})
    for name in {name.lower() for name, _ in applied}:
        del response.headers[name]
    for name, value in applied:
        response.headers.append(name, value)
    return response


@router.api_route("/fault/hang", methods=GET_HEAD)
async def hang(
    request: Request, seconds: Annotated[float, Query(gt=0)] = HANG_SECONDS
) -> JSONResponse:
    """Never answers in practice; returns as soon as the client goes away (or on cancel)."""
    completed = await sleep_unless_disconnected(request, seconds)
    return json_response(request, {"hung_for": seconds, "completed": completed}, 504)
