"""The cache store interface. Backends: `memory` (embedded default), `redis` (shared by all
replicas). Picked in one place: `create_store` below, from `cache.store` in the main file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from openflare.cache.entry import CacheEntry

if TYPE_CHECKING:
    from multidict import MultiMapping

    from openflare.config.models import CacheConfig
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics


@dataclass(frozen=True, slots=True)
class StoreStats:
    entries: int
    size_bytes: int
    max_entries: int
    max_bytes: int
    evictions: int


class CacheStore(Protocol):
    kind: str
    # reads wait for a network round trip: requests are then never tried inline, in the read
    # callback (pipeline/inline.py), since every lookup would stop there and be handed over
    waits: bool

    async def get(self, key: str) -> CacheEntry | None: ...

    async def peek(self, key: str) -> CacheEntry | None:
        """The stored entry like `get`, but without touching anything: no LRU move, no expiry
        refresh, nothing removed (an explain dry run reads through this, pipeline/cache_explain)."""
        ...

    async def get_vary(self, primary: str) -> tuple[str, ...] | None:
        """The header names the stored variants of `primary` vary on (None: nothing stored)."""
        ...

    async def lookup(self, primary: str, headers: MultiMapping[str]) -> CacheEntry | None:
        """What a request with `headers` finds under `primary`: `get_vary(primary)`, then (when
        something is stored) `get` of `variant_key(primary, vary, headers)` — one call, so a
        shared store can read both in one round trip."""
        ...

    async def put(self, entry: CacheEntry) -> None: ...

    def reserve(self, nbytes: int) -> bool:
        """Count `nbytes` of a body being collected in this process for storage against
        `cache.max_bytes` (the memory store evicts to make room); False: no room, do not store."""
        ...

    def release(self, nbytes: int) -> None:
        """Return a reservation once the body was stored or dropped."""
        ...

    async def purge_url(self, base: str, soft: bool) -> int:
        """Every variant stored under the URL `base` (see key.base_of)."""
        ...

    async def purge_key(self, key: str, soft: bool) -> int: ...

    async def purge_prefix(self, prefix: str, soft: bool) -> int:
        """URL prefix (`http://host/static/`) or path prefix (`/static/`, any host)."""
        ...

    async def purge_tags(self, tags: Iterable[str], soft: bool) -> int: ...

    async def purge_all(self, soft: bool) -> int: ...

    async def stats(self) -> StoreStats: ...

    async def top(self, limit: int) -> list[tuple[str, int]]: ...

    async def close(self) -> None: ...


def url_matches_prefix(base: str, prefix: str) -> bool:
    if prefix.startswith("/"):
        scheme_sep = base.find("://")
        path_start = base.find("/", scheme_sep + 3) if scheme_sep >= 0 else -1
        return path_start >= 0 and base.startswith(prefix, path_start)
    return base.startswith(prefix)


def create_store(config: CacheConfig, metrics: Metrics, log: LogWriter) -> CacheStore:
    """The one place a cache backend is chosen."""
    if config.store == "redis":
        from openflare.cache.storage.redis import RedisStore

        return RedisStore(config, metrics, log)
    from openflare.cache.storage.memory import MemoryStore

    store = MemoryStore(
        config.max_entries, config.max_bytes, config.max_variants, metrics.cache_evictions.inc
    )
    metrics.cache_size_bytes.set_function(store.accounted_bytes)
    metrics.cache_entries.set_function(store.entry_count)
    return store
