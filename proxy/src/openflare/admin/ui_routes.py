"""The built-in dashboard on the admin listener: `GET /` and `/ui/<file>`.

Static files shipped in the package (`admin/ui/`), read once when the admin app is built and
served from memory with an ETag. No CDN, no build step, no inline script or style: the
Content-Security-Policy below allows only this origin's own files, and `form-action 'none'`
means the login form can never be submitted as a request (a token can never end up in a URL,
even with scripts off). The pages talk to `/admin/*` with the admin token as a Bearer header
(docs/13-admin-dashboard.md); these files themselves are public and hold no data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

UI_PACKAGE = "openflare.admin"
UI_FOLDER = "ui"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    # revalidate every time (cheap with the ETag), so an upgrade is seen at once
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of `admin/ui/` by name, read once."""
    folder = resources.files(UI_PACKAGE).joinpath(UI_FOLDER)
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None or not entry.is_file():
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[entry.name] = Asset(body, content_type, etag)
    return assets


def asset_response(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    offered = request.headers.get("If-None-Match", "")
    if asset.etag in (tag.strip() for tag in offered.split(",")):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


def not_found() -> web.Response:
    return web.Response(
        status=404,
        text="not found\n",
        content_type="text/plain",
        headers=SECURITY_HEADERS,
    )


def add_ui_routes(app: web.Application) -> None:
    assets = load_assets()
    index = assets["index.html"]

    async def page(request: web.Request) -> web.Response:
        return asset_response(request, index)

    async def file(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["name"])
        return not_found() if asset is None else asset_response(request, asset)

    app.router.add_get("/", page)
    app.router.add_get("/ui/{name}", file)
