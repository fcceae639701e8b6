"""The admin listener: health, readiness, metrics, and the token-protected `/admin/*` API."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from openflare.admin.auth import admin_auth_middleware, json_error
from openflare.admin.cache_routes import add_cache_routes
from openflare.admin.explain_routes import add_explain_routes
from openflare.admin.runtime_view import runtime_view
from openflare.admin.stats_routes import add_stats_routes
from openflare.admin.ui_routes import add_ui_routes
from openflare.config.reload import ConfigManager
from openflare.deps import Deps
from openflare.runtime import RuntimeHolder


def create_admin_app(holder: RuntimeHolder, deps: Deps, manager: ConfigManager) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready, reason = deps.health.readiness()
        return web.json_response(
            {"status": reason, "config_hash": holder.runtime.bundle.hash},
            status=200 if ready else 503,
        )

    async def metrics(request: web.Request) -> web.Response:
        # OpenMetrics (with exemplars) when the scraper asks for it, as Prometheus does
        body, content_type = deps.metrics.render(request.headers.get("Accept", ""))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        response.headers["Vary"] = "Accept"
        return response

    async def config_status(request: web.Request) -> web.Response:
        return web.json_response({**manager.status(), "runtime": runtime_view(deps)})

    async def config_reload(request: web.Request) -> web.Response:
        outcome = await manager.reload("admin_api")
        return web.json_response(asdict(outcome), status=200 if outcome.result != "error" else 422)

    async def not_found(request: web.Request) -> web.Response:
        return json_error(404, "not_found", f"no admin endpoint {request.method} {request.path}")

    app = web.Application(middlewares=[admin_auth_middleware(holder, deps.log, deps.auth_failures)])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/config", config_status)
    app.router.add_post("/admin/config/reload", config_reload)
    add_cache_routes(app, holder, deps)
    add_explain_routes(app, holder, deps)  # POST /admin/explain, GET /admin/trace/{id}
    add_stats_routes(app, holder, deps, manager)  # the dashboard's JSON (docs/13)
    add_ui_routes(app)  # the dashboard itself: GET / and /ui/*
    app.router.add_route("*", "/admin/{tail:.*}", not_found)
    return app
