"""The "website": home page, static assets, search page and form submission."""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .common import GET_HEAD, http_date, is_not_modified, json_response, parse_fields
from .state import stamp_of

router = APIRouter()

#: Last-Modified of every static asset (fixed, in the past).
STATIC_LAST_MODIFIED = 1704067200.0  # Mon, 01 Jan 2024 00:00:00 GMT
STATIC_CACHE_CONTROL = "public, max-age=3600"
HOME_CACHE_CONTROL = "public, max-age=30"


@dataclass(frozen=True)
class StaticAsset:
    content: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.content).hexdigest()[:32] + '"'


APP_JS = b"""// OpenFlare test site - deterministic script
(function () {
  "use strict";
  var stamp = document.getElementById("origin-stamp");
  if (stamp) {
    stamp.setAttribute("data-loaded", "1");
  }
  window.openflareTestsite = { version: 1 };
})();
"""

STYLE_CSS = b"""/* OpenFlare test site - deterministic stylesheet */
body { font-family: sans-serif; margin: 2rem; color: #222; background: #fafafa; }
h1 { color: #f38020; }
#origin-stamp { font-family: monospace; color: #666; }
"""

LOGO_SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">
  <circle cx="32" cy="32" r="30" fill="#f38020"/>
  <text x="32" y="40" font-size="24" text-anchor="middle" fill="#fff">OF</text>
</svg>
"""

STATIC_ASSETS: dict[str, StaticAsset] = {
    "app.js": StaticAsset(APP_JS, "text/javascript; charset=utf-8"),
    "style.css": StaticAsset(STYLE_CSS, "text/css; charset=utf-8"),
    "logo.svg": StaticAsset(LOGO_SVG, "image/svg+xml"),
}


def _page(request: Request, title: str, body: str) -> str:
    stamp = stamp_of(request)
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="stylesheet" href="/static/style.css">\n'
        '<script src="/static/app.js" defer></script>\n'
        "</head>\n<body>\n"
        '<img src="/static/logo.svg" alt="OpenFlare logo" width="64" height="64">\n'
        f"{body}\n"
        f'<p id="origin-stamp" data-seq="{stamp.seq}" data-ts="{stamp.ts}">'
        f"seq {stamp.seq} at {stamp.ts}</p>\n"
        "</body>\n</html>\n"
    )


@router.api_route("/", methods=GET_HEAD)
async def home(request: Request) -> HTMLResponse:
    body = (
        "<h1>OpenFlare test origin</h1>\n"
        '<form action="/search" method="get"><input name="q"><button>Search</button></form>\n'
        '<ul><li><a href="/cache/public-short">cached page</a></li>'
        '<li><a href="/api/items">items API</a></li></ul>'
    )
    return HTMLResponse(
        _page(request, "OpenFlare test origin", body),
        headers={"cache-control": HOME_CACHE_CONTROL},
    )


@router.api_route("/static/{name}", methods=GET_HEAD)
async def static_asset(request: Request, name: str) -> Response:
    asset = STATIC_ASSETS.get(name)
    if asset is None:
        raise HTTPException(404, f"no static asset {name!r}")
    headers = {
        "cache-control": STATIC_CACHE_CONTROL,
        "etag": asset.etag,
        "last-modified": http_date(STATIC_LAST_MODIFIED),
    }
    if is_not_modified(request, asset.etag, STATIC_LAST_MODIFIED):
        return Response(status_code=304, headers=headers)
    return Response(asset.content, media_type=asset.content_type, headers=headers)


@router.api_route("/search", methods=GET_HEAD)
async def search(request: Request, q: str = "") -> HTMLResponse:
    escaped = html.escape(q, quote=True)
    body = (
        "<h1>Search</h1>\n"
        f'<form action="/search" method="get"><input name="q" value="{escaped}"></form>\n'
        f'<p id="query">Results for: {escaped}</p>\n<ol></ol>'
    )
    return HTMLResponse(_page(request, f"Search: {q}", body))


@router.post("/submit")
async def submit(request: Request) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    kind, fields = parse_fields(content_type, await request.body())
    return json_response(
        request,
        {"kind": kind, "content_type": content_type or None, "fields": fields},
        200,
        {"cache-control": "no-store"},
    )
