"""In-process LRU store bounded by entries and by bytes, with exact byte accounting.

Entries expire on read (past what stale serving or validation could still use) and in a
periodic sweep; tag and URL indexes make purges proportional to what they remove. The indexes
hold only what the entry itself cannot tell: a URL without `Vary` and without extra key parts
(the usual case) is found by its key alone, so it costs one LRU slot and nothing more. Bodies being
collected for storage are reserved against the same `max_bytes` (`reserve` / `release`), so
stored plus in-flight bytes stay within it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from openflare.cache.entry import CacheEntry
from openflare.cache.key import base_of, variant_key
from openflare.cache.storage.base import StoreStats, url_matches_prefix

if TYPE_CHECKING:
    from multidict import MultiMapping

SWEEP_INTERVAL_SECONDS = 30.0


class MemoryStore:
    kind = "memory"
    waits = False

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        max_variants: int = 16,
        on_evict: Callable[[], None] | None = None,
    ) -> None:
        self._on_evict = on_evict
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_variants = max_variants
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        # primaries with a Vary: their header names and their variants' keys (a primary
        # without Vary is its entry's key)
        self._vary: dict[str, tuple[str, ...]] = {}
        self._variants: dict[str, OrderedDict[str, None]] = {}
        # URL → the primaries that are more than that URL (extra key parts after `#`)
        self._keyed: dict[str, set[str]] = {}
        self._tags: dict[str, set[str]] = {}
        self.size_bytes = 0  # stored entries (entry.memory_cost)
        self.reserved_bytes = 0  # bodies being collected for storage
        self.evictions = 0
        self._sweeper: asyncio.Task[None] | None = None

    # --- reads ---------------------------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.keep_until() < time.time():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def peek(self, key: str) -> CacheEntry | None:
        """`get` without its effects: the LRU order stays, an expired entry is left for the
        sweep (None is returned for it all the same), and no hit is counted (only the cache
        stage counts hits)."""
        entry = self._entries.get(key)
        if entry is None or entry.keep_until() < time.time():
            return None
        return entry

    async def get_vary(self, primary: str) -> tuple[str, ...] | None:
        vary = self._vary.get(primary)
        if vary is None and primary in self._entries:
            return ()
        return vary

    async def lookup(self, primary: str, headers: MultiMapping[str]) -> CacheEntry | None:
        """`get_vary`, then `get` of the variant, without the extra await: a primary with no
        Vary record is its entry's key (absent: `get` finds nothing)."""
        vary = self._vary.get(primary)
        return await self.get(primary if vary is None else variant_key(primary, vary, headers))

    # --- writes --------------------------------------------------------------------------------

    async def put(self, entry: CacheEntry) -> None:
        self._ensure_sweeper()
        size = entry.size  # computed from the entry's parts (memory_cost): read once
        if size > self.max_bytes or self.max_entries == 0:
            return
        if entry.key in self._entries:
            self._remove(entry.key)
        primary = entry.primary
        stored_vary = self._vary.get(primary, () if primary in self._entries else entry.vary)
        if stored_vary != entry.vary:
            self._remove_primary(primary)  # the origin changed what it varies on
        self._entries[entry.key] = entry
        self.size_bytes += size
        base = base_of(primary)
        if base != primary:
            self._keyed.setdefault(base, set()).add(primary)
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(entry.key)
        if entry.vary:
            self._vary[primary] = entry.vary
            variants = self._variants.setdefault(primary, OrderedDict())
            variants[entry.key] = None
            while len(variants) > self.max_variants:
                self._evict(next(iter(variants)))
        while self._entries and (
            len(self._entries) > self.max_entries
            or self.size_bytes + self.reserved_bytes > self.max_bytes
        ):
            self._evict(next(iter(self._entries)))

    def reserve(self, nbytes: int) -> bool:
        """Count `nbytes` of a body being collected for storage against `max_bytes`, evicting
        the least recently used entries to make room; False (nothing reserved) when bodies in
        flight would exceed `max_bytes` on their own."""
        if self.reserved_bytes + nbytes > self.max_bytes:
            return False
        self.reserved_bytes += nbytes
        while self._entries and self.size_bytes + self.reserved_bytes > self.max_bytes:
            self._evict(next(iter(self._entries)))
        return True

    def release(self, nbytes: int) -> None:
        self.reserved_bytes = max(0, self.reserved_bytes - nbytes)

    def _evict(self, key: str) -> None:
        self._remove(key)
        self.evictions += 1
        if self._on_evict is not None:
            self._on_evict()

    def _remove(self, key: str) -> CacheEntry | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.size_bytes -= entry.size
        primary = entry.primary
        variants = self._variants.get(primary)
        if variants is not None:
            variants.pop(key, None)
            if not variants:
                del self._variants[primary]
                self._vary.pop(primary, None)
        base = base_of(primary)
        if base != primary and primary not in self._variants:  # its last variant went
            keyed = self._keyed.get(base)
            if keyed is not None:
                keyed.discard(primary)
                if not keyed:
                    del self._keyed[base]
        for tag in entry.tags:
            tagged = self._tags.get(tag)
            if tagged is not None:
                tagged.discard(key)
                if not tagged:
                    del self._tags[tag]
        return entry

    def _keys_of(self, primary: str) -> list[str]:
        """The keys of the entries stored under `primary` (its variants, or itself)."""
        variants = self._variants.get(primary)
        if variants is not None:
            return list(variants)
        return [primary] if primary in self._entries else []

    def _remove_primary(self, primary: str) -> None:
        for key in self._keys_of(primary):
            self._remove(key)

    def _purge(self, keys: Iterable[str], soft: bool) -> int:
        count = 0
        for key in list(keys):
            entry = self._entries.get(key)
            if entry is None:
                continue
            count += 1
            if soft:
                self._entries[key] = entry.soft_purged()
            else:
                self._remove(key)
        return count

    async def purge_url(self, base: str, soft: bool) -> int:
        primaries = [base, *self._keyed.get(base, ())]
        return self._purge([key for p in primaries for key in self._keys_of(p)], soft)

    async def purge_key(self, key: str, soft: bool) -> int:
        return self._purge((key,), soft)

    async def purge_prefix(self, prefix: str, soft: bool) -> int:
        keys = [
            key
            for key, entry in self._entries.items()
            if url_matches_prefix(base_of(entry.primary), prefix)
        ]
        return self._purge(keys, soft)

    async def purge_tags(self, tags: Iterable[str], soft: bool) -> int:
        keys: set[str] = set()
        for tag in tags:
            keys |= self._tags.get(tag, set())
        return self._purge(keys, soft)

    async def purge_all(self, soft: bool) -> int:
        return self._purge(list(self._entries), soft)

    # --- housekeeping --------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        expired = [k for k, e in self._entries.items() if e.keep_until() < now]
        for key in expired:
            self._remove(key)
        return len(expired)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            self.sweep()

    def entry_count(self) -> int:
        return len(self._entries)

    def accounted_bytes(self) -> int:
        return self.size_bytes + self.reserved_bytes

    async def stats(self) -> StoreStats:
        return StoreStats(
            len(self._entries),
            self.accounted_bytes(),
            self.max_entries,
            self.max_bytes,
            self.evictions,
        )

    async def top(self, limit: int) -> list[tuple[str, int]]:
        ranked = sorted(self._entries.values(), key=lambda e: e.hits, reverse=True)[:limit]
        return [(e.key, e.hits) for e in ranked]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
