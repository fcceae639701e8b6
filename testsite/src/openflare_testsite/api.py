"""``/api/*``: a small JSON API (time, random, echo, in-memory CRUD). Always ``no-store``."""

from __future__ import annotations

import json
import random
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from .common import GET_HEAD, json_response, query_multi
from .state import origin_state

router = APIRouter(prefix="/api")

NO_STORE = {"cache-control": "no-store"}


def _api(request: Request, data: dict[str, Any], status: int = 200) -> JSONResponse:
    return json_response(request, data, status, NO_STORE)


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = json.loads(body) if body else None
    except ValueError as exc:
        raise HTTPException(400, f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HTTPException(400, "body must be a JSON object")
    return data


@router.api_route("/time", methods=GET_HEAD)
async def api_time(request: Request) -> JSONResponse:
    now = time.time()
    iso = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    return _api(request, {"epoch": now, "iso": iso})


@router.api_route("/random", methods=GET_HEAD)
async def api_random(request: Request) -> JSONResponse:
    return _api(
        request,
        {
            "value": random.random(),
            "int": random.randint(0, 2**31 - 1),
            "hex": secrets.token_hex(16),
        },
    )


@router.api_route("/echo", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
async def api_echo(request: Request) -> JSONResponse:
    body = await request.body()
    parsed: Any = None
    body_text: str | None = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            body_text = body.decode("utf-8", "replace")
    return _api(
        request,
        {
            "method": request.method,
            "query": query_multi(request),
            "json": parsed,
            "body_text": body_text,
            "content_type": request.headers.get("content-type"),
        },
    )


@router.api_route("/items", methods=GET_HEAD)
async def list_items(request: Request) -> JSONResponse:
    state = origin_state(request)
    with state.lock:
        items = [dict(item) for _, item in sorted(state.items.items())]
    return _api(request, {"items": items, "count": len(items)})


@router.post("/items")
async def create_item(request: Request) -> JSONResponse:
    data = await _json_object(request)
    state = origin_state(request)
    with state.lock:
        item_id = state.next_item_id
        state.next_item_id += 1
        item = {**data, "id": item_id}
        state.items[item_id] = item
    response = _api(request, {"item": item}, 201)
    response.headers["location"] = f"/api/items/{item_id}"
    return response


def _missing(item_id: int) -> HTTPException:
    return HTTPException(404, f"item {item_id} not found", headers=NO_STORE)


@router.api_route("/items/{item_id}", methods=GET_HEAD)
async def get_item(request: Request, item_id: int) -> JSONResponse:
    item = origin_state(request).items.get(item_id)
    if item is None:
        raise _missing(item_id)
    return _api(request, {"item": dict(item)})


@router.put("/items/{item_id}")
async def replace_item(request: Request, item_id: int) -> JSONResponse:
    data = await _json_object(request)
    state = origin_state(request)
    with state.lock:
        if item_id not in state.items:
            raise _missing(item_id)
        item = {**data, "id": item_id}
        state.items[item_id] = item
    return _api(request, {"item": item})


@router.patch("/items/{item_id}")
async def update_item(request: Request, item_id: int) -> JSONResponse:
    data = await _json_object(request)
    state = origin_state(request)
    with state.lock:
        current = state.items.get(item_id)
        if current is None:
            raise _missing(item_id)
        item = {**current, **data, "id": item_id}
        state.items[item_id] = item
    return _api(request, {"item": item})


@router.delete("/items/{item_id}")
async def delete_item(request: Request, item_id: int) -> JSONResponse:
    state = origin_state(request)
    with state.lock:
        item = state.items.pop(item_id, None)
    if item is None:
        raise _missing(item_id)
    return _api(request, {"deleted": item})
