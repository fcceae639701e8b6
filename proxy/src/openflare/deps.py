"""Long-lived state that survives reloads: logs, metrics, upstream pools, health.

A runtime is rebuilt on every reload; these are built once per process and handed to each
runtime's stage factories. The cache store is rebuilt only when its own settings change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openflare.admin.auth import AuthFailures
from openflare.cache.singleflight import SingleFlight
from openflare.cache.storage.base import CacheStore, create_store
from openflare.config.models import CacheConfig
from openflare.observability.decision_traces import TraceState
from openflare.observability.health import Health
from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics
from openflare.ratelimit.base import BackendHolder
from openflare.upstream.pool import UpstreamPools

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.pipeline.forward import UpstreamClient


@dataclass
class Deps:
    log: LogWriter
    metrics: Metrics = field(default_factory=Metrics)
    upstreams: UpstreamPools = field(default_factory=UpstreamPools)
    health: Health = field(default_factory=Health)
    cache_flights: SingleFlight[Any] = field(default_factory=SingleFlight)
    ratelimit: BackendHolder = field(default_factory=BackendHolder)  # buckets outlive reloads
    traces: TraceState = field(default_factory=TraceState)  # decision traces (pipeline/explain)
    # wrong admin tokens per client IP: the admin listener and the trace token header share it
    auth_failures: AuthFailures = field(default_factory=AuthFailures)
    _cache_store: CacheStore | None = None
    _cache_store_settings: tuple[object, ...] = ()
    _retired_stores: list[CacheStore] = field(default_factory=list)
    # the upstream client of the runtime being built: the cache and forward stages share it
    upstream_client: tuple[ConfigBundle, UpstreamClient] | None = None

    def cache_store(self, config: CacheConfig) -> CacheStore:
        settings = (
            config.store,
            config.redis_url,
            config.redis_key_prefix,
            config.redis_timeout_ms,
            config.max_entries,
            config.max_bytes,
            config.max_variants,
        )
        if self._cache_store is None or settings != self._cache_store_settings:
            if self._cache_store is not None:
                self._retired_stores.append(self._cache_store)
            self._cache_store = create_store(config, self.metrics, self.log)
            self._cache_store_settings = settings
        return self._cache_store

    @property
    def current_cache_store(self) -> CacheStore | None:
        return self._cache_store

    async def close(self) -> None:
        await self.upstreams.close()
        await self.ratelimit.close()
        for store in [*self._retired_stores, self._cache_store]:
            if store is not None:
                await store.close()
