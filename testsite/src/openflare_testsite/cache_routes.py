"""``/cache/*``: responses with every interesting combination of caching headers."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from .common import (
    GET_HEAD,
    MIB,
    http_date,
    is_not_modified,
    json_response,
    parse_http_date,
    pattern_bytes,
    valid_header_value,
)
from .state import origin_state, stamp_of

router = APIRouter(prefix="/cache")

#: Last-Modified of ``/cache/last-modified`` at version 1 (fixed, in the past).
LAST_MODIFIED_BASE = 1704067200.0  # Mon, 01 Jan 2024 00:00:00 GMT
CUSTOM_MAX_SIZE = 64 * MIB


def _cached(
    request: Request,
    name: str,
    cache_control: str | None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    all_headers = dict(headers or {})
    if cache_control is not None:
        all_headers["cache-control"] = cache_control
    body = {"endpoint": name, "cache_control": cache_control, **extra}
    return json_response(request, body, 200, all_headers)


@router.api_route("/public-short", methods=GET_HEAD)
async def public_short(request: Request) -> JSONResponse:
    return _cached(request, "public-short", "public, max-age=5")


@router.api_route("/public-long", methods=GET_HEAD)
async def public_long(request: Request) -> JSONResponse:
    return _cached(request, "public-long", "public, max-age=3600")


@router.api_route("/max-age/{n}", methods=GET_HEAD)
async def max_age(request: Request, n: int) -> JSONResponse:
    return _cached(request, "max-age", f"public, max-age={n}", max_age=n)


@router.api_route("/s-maxage/{n}", methods=GET_HEAD)
async def s_maxage(request: Request, n: int) -> JSONResponse:
    return _cached(request, "s-maxage", f"public, s-maxage={n}, max-age=0", s_maxage=n)


@router.api_route("/no-store", methods=GET_HEAD)
async def no_store(request: Request) -> JSONResponse:
    return _cached(request, "no-store", "no-store")


@router.api_route("/private", methods=GET_HEAD)
async def private(request: Request) -> JSONResponse:
    return _cached(request, "private", "private, max-age=60")


@router.api_route("/no-cache", methods=GET_HEAD)
async def no_cache(request: Request) -> JSONResponse:
    return _cached(request, "no-cache", "no-cache")


@router.api_route("/expires/{n}", methods=GET_HEAD)
async def expires(request: Request, n: int) -> JSONResponse:
    stamp = stamp_of(request)
    date = int(stamp.epoch)
    headers = {"date": http_date(date), "expires": http_date(date + n)}
    return _cached(request, "expires", None, headers, expires_in=n, expires=headers["expires"])


@router.api_route("/swr", methods=GET_HEAD)
async def swr(request: Request) -> JSONResponse:
    return _cached(request, "swr", "public, max-age=1, stale-while-revalidate=30")


@router.api_route("/sie", methods=GET_HEAD)
async def sie(request: Request) -> JSONResponse:
    return _cached(request, "sie", "public, max-age=1, stale-if-error=60")


@router.api_route("/must-revalidate", methods=GET_HEAD)
async def must_revalidate(request: Request) -> JSONResponse:
    return _cached(request, "must-revalidate", "public, max-age=1, must-revalidate")


@router.api_route("/vary/{header}", methods=GET_HEAD)
async def vary(request: Request, header: str) -> JSONResponse:
    return _cached(
        request,
        "vary",
        "public, max-age=60",
        {"vary": header},
        vary=header,
        value=request.headers.get(header),
    )


@router.api_route("/vary-star", methods=GET_HEAD)
async def vary_star(request: Request) -> JSONResponse:
    return _cached(request, "vary-star", "public, max-age=60", {"vary": "*"})


@router.api_route("/set-cookie", methods=GET_HEAD)
async def set_cookie(request: Request) -> JSONResponse:
    cookie = f"origin_visit={stamp_of(request).seq}; Path=/"
    return _cached(
        request, "set-cookie", "public, max-age=60", {"set-cookie": cookie}, cookie=cookie
    )


@router.api_route("/tags", methods=GET_HEAD)
async def tags(request: Request, tags: str = "default") -> JSONResponse:
    tag_list = [tag.strip() for tag in tags.split(",") if tag.strip()]
    headers = {"cache-tag": ",".join(tag_list), "surrogate-key": " ".join(tag_list)}
    return _cached(request, "tags", "public, max-age=60", headers, tags=tag_list)


@router.api_route("/no-headers", methods=GET_HEAD)
async def no_headers(request: Request) -> JSONResponse:
    return _cached(request, "no-headers", None)


# --- validators -------------------------------------------------------------------------------


def _etag_for(version: int) -> str:
    return f'"etag-v{version}"'


def _freshness(max_age: int) -> str:
    return f"public, max-age={max_age}"


@router.api_route("/etag", methods=GET_HEAD)
async def etag(request: Request, max_age: Annotated[int, Query(ge=0)] = 0) -> Response:
    version = origin_state(request).etag_version
    tag = _etag_for(version)
    headers = {"etag": tag, "cache-control": _freshness(max_age)}
    if is_not_modified(request, etag=tag):
        return Response(status_code=304, headers=headers)
    body = {"endpoint": "etag", "version": version, "etag": tag, "content": f"version {version}"}
    return json_response(request, body, 200, headers)


@router.post("/etag/bump")
async def etag_bump(request: Request) -> JSONResponse:
    state = origin_state(request)
    with state.lock:
        state.etag_version += 1
        version = state.etag_version
    return json_response(
        request,
        {"version": version, "etag": _etag_for(version)},
        200,
        {"cache-control": "no-store"},
    )


def _last_modified_for(version: int) -> float:
    return LAST_MODIFIED_BASE + (version - 1) * 86400


@router.api_route("/last-modified", methods=GET_HEAD)
async def last_modified(request: Request, max_age: Annotated[int, Query(ge=0)] = 0) -> Response:
    version = origin_state(request).last_modified_version
    modified = _last_modified_for(version)
    headers = {"last-modified": http_date(modified), "cache-control": _freshness(max_age)}
    if is_not_modified(request, last_modified=modified):
        return Response(status_code=304, headers=headers)
    body = {
        "endpoint": "last-modified",
        "version": version,
        "last_modified": headers["last-modified"],
    }
    return json_response(request, body, 200, headers)


@router.post("/last-modified/bump")
async def last_modified_bump(request: Request) -> JSONResponse:
    state = origin_state(request)
    with state.lock:
        state.last_modified_version += 1
        version = state.last_modified_version
    return json_response(
        request,
        {"version": version, "last_modified": http_date(_last_modified_for(version))},
        200,
        {"cache-control": "no-store"},
    )


# --- fully generic ------------------------------------------------------------------------------


def _check_header_value(name: str, value: str) -> str:
    if not valid_header_value(value):
        raise HTTPException(400, f"{name}: not a valid header value (CR/LF/NUL/non-latin-1)")
    return value


@router.api_route("/custom", methods=["POST", "PUT", "PATCH", "DELETE"])
async def custom_unsafe(
    request: Request,
    status: int = 200,
    location: str | None = None,
    content_location: str | None = None,
) -> Response:
    """Unsafe methods on a cacheable URL, for invalidation tests (RFC 9111 §4.4)."""
    if not 200 <= status <= 599:
        raise HTTPException(400, "status must be within 200-599")
    response = json_response(request, {"endpoint": "custom", "method": request.method}, status)
    if location is not None:
        response.headers["location"] = _check_header_value("location", location)
    if content_location is not None:
        response.headers["content-location"] = _check_header_value(
            "content-location", content_location
        )
    return response


@router.api_route("/custom", methods=GET_HEAD)
async def custom(
    request: Request,
    cc: str | None = None,
    status: int = 200,
    vary: str | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    expires: str | None = None,
    cdn_cc: str | None = None,
    set_cookie: Annotated[list[str] | None, Query()] = None,
    body: str | None = None,
    size: Annotated[int | None, Query(ge=0, le=CUSTOM_MAX_SIZE)] = None,
    content_type: str | None = None,
    delay_ms: Annotated[int, Query(ge=0, le=10_000)] = 0,
    echo_headers: bool = False,
) -> Response:
    if not 200 <= status <= 599:
        raise HTTPException(400, "status must be within 200-599")
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    if etag is not None and '"' not in etag:
        etag = f'"{etag}"'
    headers: list[tuple[str, str]] = []
    for name, value in (
        ("cache-control", cc),
        ("vary", vary),
        ("etag", etag),
        ("last-modified", last_modified),
        ("expires", expires),
        ("cdn-cache-control", cdn_cc),
    ):
        if value is not None:
            headers.append((name, _check_header_value(name, value)))
    for cookie in set_cookie or []:
        headers.append(("set-cookie", _check_header_value("set-cookie", cookie)))
    if content_type is not None:
        _check_header_value("content-type", content_type)

    def build(response: Response) -> Response:
        for name, value in headers:
            response.headers.append(name, value)
        return response

    if status == 200 and is_not_modified(request, etag, parse_http_date(last_modified)):
        return build(Response(status_code=304))
    if status in (204, 304):
        return build(Response(status_code=status))
    if size is not None:
        media = content_type or "application/octet-stream"
        return build(Response(pattern_bytes(size), status, media_type=media))
    if body is not None:
        return build(Response(body, status, media_type=content_type or "text/plain"))
    params = {key: value for key, value in request.query_params.multi_items()}
    payload: dict[str, object] = {"endpoint": "custom", "status": status, "params": params}
    if echo_headers:
        payload["headers"] = [[k, v] for k, v in request.headers.items()]
    response = json_response(request, payload, status)
    if content_type is not None:
        response.headers["content-type"] = content_type
    return build(response)
