"""``/auth/*`` and ``/private``: cookie sessions, Bearer and Basic credentials."""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from .common import GET_HEAD, json_response, parse_fields
from .state import origin_state

router = APIRouter()

SESSION_COOKIE = "session"
WWW_AUTHENTICATE = 'Bearer realm="openflare-testsite", Basic realm="openflare-testsite"'


@dataclass(frozen=True)
class Principal:
    user: str
    method: str  # "bearer" | "basic" | "session"


def authenticate(request: Request) -> Principal | None:
    """``Authorization: Bearer <token>`` / ``Basic <user:pass>`` or a live session cookie."""
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return Principal(f"bearer:{credentials[:32]}", "bearer")
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, sep, _ = decoded.partition(":")
        if sep and username:
            return Principal(username, "basic")
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        session_user = origin_state(request).sessions.get(token)
        if session_user is not None:
            return Principal(session_user, "session")
    return None


def require_principal(request: Request) -> Principal:
    principal = authenticate(request)
    if principal is None:
        raise HTTPException(
            401, "authentication required", headers={"www-authenticate": WWW_AUTHENTICATE}
        )
    return principal


@router.post("/auth/login")
async def login(request: Request) -> JSONResponse:
    kind, fields = parse_fields(request.headers.get("content-type", ""), await request.body())
    username = password = ""
    if kind in ("json", "form", "multipart") and isinstance(fields, dict):
        username = str(fields.get("username") or "")
        password = str(fields.get("password") or "")
    if not username or not password:
        raise HTTPException(401, "username and password are required")
    token = secrets.token_hex(16)
    origin_state(request).sessions[token] = username
    response = json_response(
        request,
        {"ok": True, "user": username, "session": token},
        200,
        {"cache-control": "no-store"},
    )
    response.headers["set-cookie"] = f"{SESSION_COOKIE}={token}; HttpOnly; Path=/"
    return response


@router.post("/auth/logout")
async def logout(request: Request) -> JSONResponse:
    token = request.cookies.get(SESSION_COOKIE)
    removed = bool(token) and origin_state(request).sessions.pop(token or "", None) is not None
    response = json_response(
        request, {"ok": True, "ended_session": removed}, 200, {"cache-control": "no-store"}
    )
    response.headers["set-cookie"] = f"{SESSION_COOKIE}=; Max-Age=0; HttpOnly; Path=/"
    return response


@router.api_route("/auth/profile", methods=GET_HEAD)
async def profile(request: Request) -> JSONResponse:
    principal = require_principal(request)
    return json_response(
        request,
        {"user": principal.user, "auth": principal.method},
        200,
        {"cache-control": "private, no-store"},
    )


@router.api_route("/private", methods=GET_HEAD)
async def private_page(request: Request) -> JSONResponse:
    principal = require_principal(request)
    return json_response(
        request,
        {"user": principal.user, "auth": principal.method, "secret": f"for {principal.user}"},
        200,
        {"cache-control": "private"},
    )
