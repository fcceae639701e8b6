"""Config reload: load the whole bundle, build a complete runtime, then swap.

Triggered by SIGHUP and `POST /admin/config/reload` (and, with the Kubernetes packaging, by a
watcher on the mounted ConfigMap directory). A bundle that fails to load or build never
replaces the running one: the error is logged once, counted and shown at `GET /admin/config`.
Unchanged content (same hash, same token and Redis URL) is skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from openflare.config.loader import ConfigBundle, ConfigError, load_bundle
from openflare.deps import Deps
from openflare.runtime import RuntimeHolder, build_runtime


@dataclass(frozen=True)
class ReloadResult:
    result: str  # ok | unchanged | error
    source: str
    hash: str
    at: float
    errors: tuple[str, ...] = ()


def _from_env(bundle: ConfigBundle) -> tuple[str | None, ...]:
    """What a reload can change without changing a config file (and so the hash): the values
    from the environment's secret files, OPENFLARE_ADMIN_TOKEN_FILE and OPENFLARE_REDIS_URL_FILE
    (a rotated Secret). Kept out of the hash, which /readyz shows without a token."""
    redis = bundle.rate_limits.backend.redis
    return (bundle.admin_token, bundle.proxy.cache.redis_url, redis.url if redis else None)


class ConfigManager:
    def __init__(
        self, path: str, env: Mapping[str, str], deps: Deps, holder: RuntimeHolder
    ) -> None:
        self._path = path
        self._env = env
        self._deps = deps
        self._holder = holder
        self._lock = asyncio.Lock()
        self.history: deque[ReloadResult] = deque(maxlen=20)
        self.last_error: ReloadResult | None = None
        self._publish(holder.runtime.bundle)

    def _publish(self, bundle: ConfigBundle) -> None:
        self._deps.metrics.config_info.info({"hash": bundle.hash, "path": bundle.main_path})

    async def reload(self, source: str) -> ReloadResult:
        async with self._lock:
            current = self._holder.runtime.bundle
            try:
                bundle = await asyncio.to_thread(load_bundle, self._path, self._env)
                if bundle.hash == current.hash and _from_env(bundle) == _from_env(current):
                    outcome = ReloadResult("unchanged", source, current.hash, time.time())
                else:
                    self._holder.swap(build_runtime(bundle, self._deps))
                    self._deps.log.set_level(bundle.proxy.logging.level)
                    self._publish(bundle)
                    outcome = ReloadResult("ok", source, bundle.hash, time.time())
            except ConfigError as exc:
                outcome = ReloadResult(
                    "error",
                    source,
                    current.hash,
                    time.time(),
                    tuple(str(issue) for issue in exc.issues),
                )
            except Exception as exc:  # a bug in a stage factory must not kill the process
                outcome = ReloadResult(
                    "error", source, current.hash, time.time(), (f"{type(exc).__name__}: {exc}",)
                )
        self._record(outcome)
        return outcome

    def _record(self, outcome: ReloadResult) -> None:
        self.history.append(outcome)
        self._deps.metrics.config_reloads.labels(outcome.result).inc()
        if outcome.result == "error":
            self.last_error = outcome
            self._deps.log.event(
                "error",
                "config_reload_failed",
                source=outcome.source,
                kept_hash=outcome.hash,
                errors=list(outcome.errors),
            )
        elif outcome.result == "ok":
            self._deps.log.event(
                "info", "config_reloaded", source=outcome.source, hash=outcome.hash
            )

    def status(self) -> dict[str, Any]:
        runtime = self._holder.runtime
        bundle = runtime.bundle
        return {
            "hash": bundle.hash,
            "loaded_at": runtime.loaded_at,
            "main_path": bundle.main_path,
            "sources": [{"file": f, "sha256": h} for f, h in bundle.sources],
            "dev_mode": bundle.proxy.dev_mode,
            "stages": list(runtime.stages),
            "last_error": asdict(self.last_error) if self.last_error else None,
            "history": [asdict(item) for item in self.history],
        }
