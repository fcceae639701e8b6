"""Echo endpoints for WAF / header / path tests, including the any-method ``/debug/echo``."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from .common import (
    GET_HEAD,
    KIB,
    header_pairs,
    headers_dict,
    json_response,
    parse_fields,
    query_multi,
)
from .middleware import raw_path_of
from .state import origin_state

router = APIRouter()

NO_STORE = {"cache-control": "no-store"}
ECHO_BODY_TEXT_LIMIT = 4 * KIB
DEBUG_BODY_TEXT_LIMIT = 64 * KIB


class BodyDigest:
    """Streaming byte count + SHA-256 + the first ``keep`` bytes of a request body."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.size = 0
        self.chunks = 0
        self.head = bytearray()
        self._sha = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        self.chunks += 1
        self._sha.update(chunk)
        if len(self.head) < self.keep:
            self.head += chunk[: self.keep - len(self.head)]

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def text(self) -> str:
        return bytes(self.head).decode("utf-8", "replace")


async def digest_body(request: Request, keep: int) -> BodyDigest:
    digest = BodyDigest(keep)
    async for chunk in request.stream():
        digest.update(chunk)
    return digest


def _client(request: Request) -> str:
    client = request.scope.get("client")
    if not client:
        return ""
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


@router.api_route("/echo/query", methods=GET_HEAD)
async def echo_query(request: Request) -> JSONResponse:
    return json_response(
        request,
        {
            "args": query_multi(request),
            "query_string": request.scope.get("query_string", b"").decode("latin-1"),
        },
        200,
        NO_STORE,
    )


@router.api_route("/echo/headers", methods=GET_HEAD)
async def echo_headers(request: Request) -> JSONResponse:
    return json_response(
        request,
        {"headers": headers_dict(request), "header_list": header_pairs(request)},
        200,
        NO_STORE,
    )


@router.api_route("/echo/body", methods=["POST", "PUT"])
async def echo_body(request: Request) -> JSONResponse:
    digest = await digest_body(request, ECHO_BODY_TEXT_LIMIT)
    return json_response(
        request,
        {
            "method": request.method,
            "content_type": request.headers.get("content-type"),
            "content_length": request.headers.get("content-length"),
            "transfer_encoding": request.headers.get("transfer-encoding"),
            "length": digest.size,
            "sha256": digest.sha256,
            "text": digest.text,
            "truncated": digest.size > ECHO_BODY_TEXT_LIMIT,
        },
        200,
        NO_STORE,
    )


@router.api_route("/webhooks/test", methods=["POST"])
async def webhook_receive(request: Request) -> JSONResponse:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    kind, fields = parse_fields(content_type, body)
    state = origin_state(request)
    with state.lock:
        record: dict[str, Any] = {
            "id": state.next_webhook_id,
            "received_at": time.time(),
            "headers": headers_dict(request),
            "query": query_multi(request),
            "content_type": content_type or None,
            "kind": kind,
            "payload": fields,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        state.next_webhook_id += 1
        state.webhooks.append(record)
    return json_response(request, {"received": True, "webhook": record}, 200, NO_STORE)


@router.api_route("/webhooks/test", methods=GET_HEAD)
async def webhook_list(request: Request) -> JSONResponse:
    state = origin_state(request)
    with state.lock:
        records = list(state.webhooks)
    return json_response(request, {"webhooks": records, "count": len(records)}, 200, NO_STORE)


@router.api_route("/path-test/{path:path}", methods=GET_HEAD)
async def path_test(request: Request, path: str) -> JSONResponse:
    return json_response(
        request,
        {
            "path_param": path,
            "path": request.scope["path"],
            "raw_path": raw_path_of(request.scope),
            "query_string": request.scope.get("query_string", b"").decode("latin-1"),
        },
        200,
        NO_STORE,
    )


@router.api_route("/debug/headers", methods=GET_HEAD)
async def debug_headers(request: Request) -> JSONResponse:
    return json_response(request, {"headers": headers_dict(request)}, 200, NO_STORE)


class DebugEcho:
    """Raw ASGI endpoint answering every method (also extension methods like PURGE/FOO)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        digest = await digest_body(request, DEBUG_BODY_TEXT_LIMIT)
        data = {
            "method": request.method,
            "path": scope["path"],
            "raw_path": raw_path_of(scope),
            "query_string": scope.get("query_string", b"").decode("latin-1"),
            "headers": header_pairs(request),
            "client": _client(request),
            "http_version": scope.get("http_version", ""),
            "scheme": scope.get("scheme", ""),
            "body_bytes": digest.size,
            "body_sha256": digest.sha256,
            "body_text": digest.text,
        }
        response = json_response(request, data, 200, NO_STORE)
        await response(scope, receive, send)
