"""Redis store: one cache shared by every proxy replica, so a purge on one is seen by all.

Layout under `cache.redis_key_prefix` (default `openflare:cache:`):
`e:<sha256(key)>` the entry (4-byte metadata length, JSON metadata with the stored header block
as a latin-1 string, body), expiring when the entry
is useless even for stale serving; `v:<primary>` the header names its variants vary on;
`u:<url>` and `t:<tag>` sets of entry keys, so URL and tag purges never use `KEYS`; prefix
purges walk `u:*` with `SCAN`. Timeouts are short: a Redis outage makes the cache a
pass-through (counted and logged once per interval), never a source of 5xx.

Bounds: Redis holds the entries, so Redis bounds them: every key written here carries a TTL
(so any eviction policy, `volatile-*` included, may drop it), objects above
`cache.max_object_bytes` are never written, and at startup the store reads `maxmemory` and
`maxmemory-policy` (`CONFIG GET`) and logs a warning when Redis is unbounded or refuses writes
when full (`noeviction`). `cache.max_bytes` bounds what this process holds: the bodies being
collected for storage (`reserve`). `GET /admin/cache/stats` reports Redis's `maxmemory` as
`max_bytes` (0: no cap).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis

from openflare.cache.entry import CacheEntry, render_headers
from openflare.cache.key import base_of, variant_key
from openflare.cache.storage.base import StoreStats, url_matches_prefix
from openflare.cache.storage.redis_reads import Reads, reads_for

if TYPE_CHECKING:
    from multidict import MultiMapping

    from openflare.config.models import CacheConfig
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics

ERROR_LOG_INTERVAL = 10.0
SCAN_BATCH = 500
# Policies under which Redis evicts our keys when `maxmemory` is reached (every key has a TTL,
# so the volatile-* ones qualify too); `noeviction` makes writes fail instead.
EVICTING_POLICIES = frozenset(
    {
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    }
)


def encode_entry(entry: CacheEntry) -> bytes:
    """4 bytes of metadata length, the metadata as JSON (the `CacheEntry` constructor's
    arguments), the body."""
    fields = {
        "key": entry.key,
        "primary": entry.primary,
        "status": entry.status,
        "reason": entry.reason,
        "headers": entry.headers.decode("latin-1"),  # any bytes, losslessly, as JSON text
        # an entry keeps only the time its response had age 0: written as a response that
        # arrived then without Age or Date, which gives every reader the same age
        "request_time": entry.born,
        "response_time": entry.born,
        "date_value": None,
        "age_value": 0.0,
        "lifetime": entry.lifetime,
        "stale_while_revalidate": entry.stale_while_revalidate,
        "stale_if_error": entry.stale_if_error,
        "must_revalidate": entry.must_revalidate,
        "no_cache": entry.no_cache,
        "auth_shareable": entry.auth_shareable,
        "vary": entry.vary,
        "tags": entry.tags,
        "freshness_source": entry.freshness_source,
        "invalidated": entry.invalidated,
    }
    meta = orjson.dumps(fields)
    return len(meta).to_bytes(4, "big") + meta + entry.body


def decode_entry(raw: bytes | str) -> CacheEntry:
    if isinstance(raw, str):  # only when a client is built with decode_responses=True
        raw = raw.encode("latin-1")
    length = int.from_bytes(raw[:4], "big")
    meta: dict[str, Any] = orjson.loads(raw[4 : 4 + length])
    headers = meta["headers"]
    if isinstance(headers, str):
        meta["headers"] = headers.encode("latin-1")
    else:  # written before the header block: [[name, value], ...] (Cache-Status then stored)
        meta.pop("etag", None)  # now read from the block
        meta.pop("last_modified", None)
        meta["headers"] = render_headers(
            (name, value) for name, value in headers if name.lower() != "cache-status"
        )
    meta["vary"] = tuple(meta["vary"])
    meta["tags"] = tuple(meta["tags"])
    return CacheEntry(body=raw[4 + length :], **meta)


def parse_vary(raw: bytes | str) -> tuple[str, ...]:
    """A stored Vary record: the header names, comma-separated ("" when none)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return tuple(text.split(",")) if text else ()


def glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisStore:
    kind = "redis"
    waits = True  # so no request is run inline with it: its calls are always in a task

    def __init__(self, config: CacheConfig, metrics: Metrics, log: LogWriter) -> None:
        timeout = config.redis_timeout_ms / 1000
        # writes, purges, stats: every command bounded by `socket_timeout`
        self._redis = aioredis.Redis.from_url(
            config.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            max_connections=256,
        )
        # Reads (every request's lookup): GET and MGET on a lean RESP connection pool
        # (redis_reads.py), each bounded by one `asyncio.timeout` around the whole read
        self._reads: Reads = reads_for(config.redis_url, timeout)
        self._read_budget = 2 * timeout  # a new connection, then the read
        self._prefix = config.redis_key_prefix
        self._max_bytes = config.max_bytes  # bodies in flight in this process
        self._reserved = 0
        self._maxmemory = 0  # Redis's own bound, read by check_bounds (0: none or unknown)
        self._metrics = metrics
        self._log = log
        self._last_error_log = 0.0
        self._bounds_check: asyncio.Task[dict[str, str] | None] | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop (tests): call check_bounds yourself
            return
        self._bounds_check = loop.create_task(self.check_bounds())

    async def check_bounds(self) -> dict[str, str] | None:
        """Read Redis's memory bound and eviction policy; log a warning when the cache can grow
        without limit or stops storing when full. None when Redis does not say (CONFIG is
        disabled or refused by an ACL on managed services): logged once, at info."""
        try:
            reply = await self._redis.config_get("maxmemory*")
            maxmemory = int(reply.get("maxmemory") or 0)
            policy = str(reply.get("maxmemory-policy") or "")
        except Exception as exc:
            self._log.event(
                "info",
                "cache_redis_bounds_unknown",
                store="redis",
                error=f"{type(exc).__name__}: {exc}"[:300],
                hint="make sure Redis has maxmemory and an eviction policy (allkeys-lru)",
            )
            return None
        self._maxmemory = maxmemory
        if maxmemory == 0:
            self._log.event(
                "warning",
                "cache_redis_unbounded",
                store="redis",
                maxmemory=0,
                policy=policy,
                hint="set maxmemory and maxmemory-policy allkeys-lru: the cache grows until "
                "Redis runs out of memory",
            )
        elif policy not in EVICTING_POLICIES:
            self._log.event(
                "warning",
                "cache_redis_noeviction",
                store="redis",
                maxmemory=maxmemory,
                policy=policy,
                hint="set maxmemory-policy allkeys-lru: when full, Redis refuses new entries "
                "and the cache stops storing",
            )
        return {"maxmemory": str(maxmemory), "maxmemory-policy": policy}

    def reserve(self, nbytes: int) -> bool:
        if self._reserved + nbytes > self._max_bytes:
            return False
        self._reserved += nbytes
        return True

    def release(self, nbytes: int) -> None:
        self._reserved = max(0, self._reserved - nbytes)

    def _entry_key(self, key: str) -> str:
        return self._prefix + "e:" + hashlib.sha256(key.encode()).hexdigest()

    def _failed(self, operation: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL:
            self._last_error_log = now
            self._log.event(
                "error",
                "cache_store_error",
                store="redis",
                operation=operation,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )

    async def lookup(self, primary: str, headers: MultiMapping[str]) -> CacheEntry | None:
        """The stored variant of `primary` for a request with `headers`, in one round trip when
        the resource has no Vary: one `MGET` reads the Vary record and the entry a variant
        without Vary is stored under (its key is the primary); a second `GET` only when the
        record names headers."""
        try:
            async with asyncio.timeout(self._read_budget):
                raw_vary, raw = await self._reads.mget(
                    self._prefix + "v:" + primary, self._entry_key(primary)
                )
                if raw_vary is None:
                    return None
                vary = parse_vary(raw_vary)
                if vary:
                    key = self._entry_key(variant_key(primary, vary, headers))
                    raw = await self._reads.get(key)
        except Exception as exc:
            self._failed("lookup", exc)
            raise
        return decode_entry(raw) if raw else None

    async def get(self, key: str) -> CacheEntry | None:
        try:
            async with asyncio.timeout(self._read_budget):
                raw = await self._reads.get(self._entry_key(key))
        except Exception as exc:
            self._failed("get", exc)
            raise
        return decode_entry(raw) if raw else None

    async def peek(self, key: str) -> CacheEntry | None:
        """A plain `GET`, like `get`: nothing here refreshes a TTL (no `GETEX`, no `PEXPIRE`) or
        counts a hit, so a read for an explanation leaves the entry as it was."""
        try:
            async with asyncio.timeout(self._read_budget):
                raw = await self._reads.get(self._entry_key(key))
        except Exception as exc:
            self._failed("peek", exc)
            raise
        return decode_entry(raw) if raw else None

    async def get_vary(self, primary: str) -> tuple[str, ...] | None:
        try:
            async with asyncio.timeout(self._read_budget):
                raw = await self._reads.get(self._prefix + "v:" + primary)
        except Exception as exc:
            self._failed("get_vary", exc)
            raise
        return None if raw is None else parse_vary(raw)

    async def put(self, entry: CacheEntry) -> None:
        ttl_ms = max(1000, int((entry.keep_until() - time.time()) * 1000))
        entry_key = self._entry_key(entry.key)
        index = self._prefix + "u:" + base_of(entry.primary)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(entry_key, encode_entry(entry), px=ttl_ms)
                pipe.set(self._prefix + "v:" + entry.primary, ",".join(entry.vary), px=ttl_ms)
                pipe.sadd(index, entry_key)
                pipe.pexpire(index, ttl_ms, gt=True)
                pipe.pexpire(index, ttl_ms, nx=True)
                for tag in entry.tags:
                    tag_key = self._prefix + "t:" + tag
                    pipe.sadd(tag_key, entry_key)
                    pipe.pexpire(tag_key, ttl_ms, gt=True)
                    pipe.pexpire(tag_key, ttl_ms, nx=True)
                await pipe.execute()
        except Exception as exc:
            self._failed("put", exc)
            raise

    async def _purge_entry_keys(self, entry_keys: Iterable[bytes | str], soft: bool) -> int:
        keys = list(entry_keys)
        if not keys:
            return 0
        if not soft:
            return int(await self._redis.delete(*keys))
        count = 0
        for entry_key in keys:
            raw = await self._redis.get(entry_key)
            if raw is None:
                continue
            await self._redis.set(
                entry_key, encode_entry(decode_entry(raw).soft_purged()), keepttl=True
            )
            count += 1
        return count

    async def purge_url(self, base: str, soft: bool) -> int:
        index = self._prefix + "u:" + base
        members = await self._redis.smembers(index)
        count = await self._purge_entry_keys(members, soft)
        if not soft:
            await self._redis.delete(index)
        return count

    async def purge_key(self, key: str, soft: bool) -> int:
        return await self._purge_entry_keys([self._entry_key(key)], soft)

    async def purge_prefix(self, prefix: str, soft: bool) -> int:
        pattern = (
            self._prefix + "u:" + ("*" if prefix.startswith("/") else glob_escape(prefix) + "*")
        )
        count = 0
        start = len(self._prefix) + 2
        async for index in self._redis.scan_iter(match=pattern, count=SCAN_BATCH):
            base = index.decode()[start:]
            if url_matches_prefix(base, prefix):
                count += await self.purge_url(base, soft)
        return count

    async def purge_tags(self, tags: Iterable[str], soft: bool) -> int:
        count = 0
        for tag in tags:
            tag_key = self._prefix + "t:" + tag
            count += await self._purge_entry_keys(await self._redis.smembers(tag_key), soft)
            if not soft:
                await self._redis.delete(tag_key)
        return count

    async def purge_all(self, soft: bool) -> int:
        count = 0
        pattern = glob_escape(self._prefix) + "*"
        if soft:
            batch = [
                k async for k in self._redis.scan_iter(match=glob_escape(self._prefix) + "e:*")
            ]
            return await self._purge_entry_keys(batch, soft=True)
        async for key in self._redis.scan_iter(match=pattern, count=SCAN_BATCH):
            if key.decode().startswith(self._prefix + "e:"):
                count += 1
            await self._redis.delete(key)
        return count

    async def stats(self) -> StoreStats:
        entries = 0
        size = 0
        async for key in self._redis.scan_iter(
            match=glob_escape(self._prefix) + "e:*", count=SCAN_BATCH
        ):
            entries += 1
            size += int(await self._redis.strlen(key))
        try:  # maxmemory may have changed since startup (CONFIG SET); best effort
            reply = await self._redis.config_get("maxmemory")
            self._maxmemory = int(reply.get("maxmemory") or 0)
        except Exception:
            pass  # CONFIG refused: the last value read (0: unknown)
        return StoreStats(entries, size, 0, self._maxmemory, 0)

    async def top(self, limit: int) -> list[tuple[str, int]]:
        return []  # hit counts are per proxy; see openflare_cache_operations_total

    async def close(self) -> None:
        if self._bounds_check is not None and not self._bounds_check.done():
            self._bounds_check.cancel()
        await self._redis.aclose()
        await self._reads.aclose()
