"""`/admin/cache/*`: stats and purges (by URL, key, prefix, tag, everything; soft or hard)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from openflare.admin.auth import json_error
from openflare.deps import Deps
from openflare.pipeline.cache import CacheStage
from openflare.runtime import RuntimeHolder

MAX_BODY = 64 * 1024


def add_cache_routes(app: web.Application, holder: RuntimeHolder, deps: Deps) -> None:
    def stage() -> CacheStage | None:
        found = holder.runtime.stage_objects.get("cache")
        return found if isinstance(found, CacheStage) else None

    async def body_of(request: web.Request) -> dict[str, Any]:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise ValueError("body too large")
        data = json.loads(raw or b"{}")
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    def purge(
        run: Callable[[CacheStage, dict[str, Any], bool], Awaitable[int]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            cache = stage()
            if cache is None:
                return json_error(409, "cache_disabled", "the cache is disabled in config")
            try:
                data = await body_of(request)
                soft = data.get("soft", False)
                if not isinstance(soft, bool):
                    raise ValueError("soft must be true or false")
                count = await run(cache, data, soft)
            except (ValueError, TypeError) as exc:
                return json_error(400, "bad_request", str(exc))
            except Exception as exc:  # e.g. Redis unreachable
                return json_error(503, "store_unavailable", f"{type(exc).__name__}: {exc}")
            deps.metrics.cache_operation("purge")
            deps.log.event("info", "cache_purge", path=request.path, count=count, soft=soft)
            return web.json_response({"purged": count, "soft": soft})

        return handler

    def text(data: dict[str, Any], name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f'"{name}" must be a non-empty string')
        return value

    async def purge_one(cache: CacheStage, data: dict[str, Any], soft: bool) -> int:
        if "key" in data:
            return await cache.store.purge_key(text(data, "key"), soft)
        return await cache.store.purge_url(cache.url_base(text(data, "url")), soft)

    async def purge_prefix(cache: CacheStage, data: dict[str, Any], soft: bool) -> int:
        return await cache.store.purge_prefix(text(data, "prefix"), soft)

    async def purge_tags(cache: CacheStage, data: dict[str, Any], soft: bool) -> int:
        tags = data.get("tags")
        if (
            not isinstance(tags, list)
            or not tags
            or not all(isinstance(t, str) and t for t in tags)
        ):
            raise ValueError('"tags" must be a non-empty list of strings')
        return await cache.store.purge_tags(tags, soft)

    async def purge_all(cache: CacheStage, data: dict[str, Any], soft: bool) -> int:
        return await cache.store.purge_all(soft)

    async def stats(request: web.Request) -> web.Response:
        store = deps.current_cache_store
        if store is None:
            return json_error(409, "cache_disabled", "the cache is disabled in config")
        try:
            numbers = await store.stats()
            top = await store.top(10)
        except Exception as exc:
            return json_error(503, "store_unavailable", f"{type(exc).__name__}: {exc}")
        counts = deps.metrics.cache_counts
        hits = counts.get("hit", 0) + counts.get("stale", 0) + counts.get("revalidated", 0)
        misses = counts.get("miss", 0) + counts.get("store", 0) + counts.get("expired", 0)
        return web.json_response(
            {
                "store": store.kind,
                "entries": numbers.entries,
                "size_bytes": numbers.size_bytes,
                "max_entries": numbers.max_entries,
                "max_bytes": numbers.max_bytes,
                "hits": counts.get("hit", 0),
                "misses": misses,
                "bypasses": counts.get("bypass", 0),
                "stores": counts.get("store", 0),
                "stale": counts.get("stale", 0),
                "revalidated": counts.get("revalidated", 0),
                "errors": counts.get("error", 0),
                "evictions": numbers.evictions,
                "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else 0.0,
                "top_keys": [{"key": key, "hits": count} for key, count in top],
            }
        )

    app.router.add_get("/admin/cache/stats", stats)
    app.router.add_post("/admin/cache/purge", purge(purge_one))
    app.router.add_post("/admin/cache/purge-prefix", purge(purge_prefix))
    app.router.add_post("/admin/cache/purge-tags", purge(purge_tags))
    app.router.add_post("/admin/cache/purge-all", purge(purge_all))
