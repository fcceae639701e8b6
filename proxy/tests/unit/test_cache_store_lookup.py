"""`CacheStore.lookup`: what the cache stage reads per request (the Vary record, then the
variant), as one call. The Redis store reads a resource without Vary in one round trip (one
`MGET`) and bounds the whole read with one timeout instead of redis-py's per-command one.

The Redis tests run against a real `redis-server` (the fixtures of test_cache_peek.py)."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Iterator

import pytest
import redis
import test_cache_peek
from cache_factories import entry as cache_entry
from multidict import CIMultiDict

from openflare.cache.entry import CacheEntry
from openflare.cache.key import variant_key
from openflare.cache.storage.base import CacheStore
from openflare.cache.storage.memory import MemoryStore
from openflare.cache.storage.redis import RedisStore
from openflare.cache.storage.redis_reads import LeanReads, RedisPyReads
from openflare.config.models import CacheConfig
from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics

URL = "http://shop.test/page"
redis_port = test_cache_peek.redis_port  # a real redis-server (fixtures)
redis_store = test_cache_peek.redis_store


def plain(body: bytes = b"plain") -> CacheEntry:
    return cache_entry(URL, body=body)


def variant(language: str) -> CacheEntry:
    headers = CIMultiDict({"Accept-Language": language})
    return cache_entry(
        variant_key(URL, ("accept-language",), headers),
        primary=URL,
        vary=("accept-language",),
        body=f"in {language}".encode(),
    )


def lang(value: str) -> CIMultiDict[str]:
    return CIMultiDict({"Accept-Language": value})


async def check_lookup(store: CacheStore) -> None:
    """The same answers as `get_vary` then `get` of the variant, for every case."""
    assert await store.lookup(URL, lang("en")) is None  # nothing stored
    await store.put(plain())
    found = await store.lookup(URL, lang("en"))
    assert found is not None and found.body == b"plain"
    assert await store.lookup(URL + "?other", lang("en")) is None
    await store.purge_all(soft=False)
    await store.put(variant("en"))
    await store.put(variant("fr"))
    for language in ("en", "fr"):
        found = await store.lookup(URL, lang(language))
        assert found is not None and found.body == f"in {language}".encode()
    assert await store.lookup(URL, lang("de")) is None  # a variant never stored
    for language in ("en", "de"):
        vary = await store.get_vary(URL)
        assert vary is not None
        expected = await store.get(variant_key(URL, vary, lang(language)))
        found = await store.lookup(URL, lang(language))
        assert (found and found.body) == (expected and expected.body)


async def test_memory_lookup_answers_like_get_vary_then_get() -> None:
    await check_lookup(MemoryStore(100, 1 << 20))


async def test_redis_lookup_answers_like_get_vary_then_get(redis_store: RedisStore) -> None:
    await check_lookup(redis_store)


def _calls(raw: redis.Redis, command: str) -> int:
    stats = raw.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_redis_lookup_without_vary_is_one_command(
    redis_store: RedisStore, redis_port: int
) -> None:
    await redis_store.put(plain())
    raw = redis.Redis(port=redis_port)
    try:
        before = _calls(raw, "mget"), _calls(raw, "get")
        found = await redis_store.lookup(URL, lang("en"))
        assert found is not None and found.body == b"plain"
        assert (_calls(raw, "mget"), _calls(raw, "get")) == (before[0] + 1, before[1])
        await redis_store.purge_all(soft=False)
        await redis_store.put(variant("en"))
        before = _calls(raw, "mget"), _calls(raw, "get")
        found = await redis_store.lookup(URL, lang("en"))
        assert found is not None and found.body == b"in en"
        assert (_calls(raw, "mget"), _calls(raw, "get")) == (before[0] + 1, before[1] + 1)
    finally:
        raw.close()


def test_redis_reads_have_no_per_command_timeout() -> None:
    store = RedisStore(
        CacheConfig(store="redis", redis_timeout_ms=250), Metrics(), LogWriter(io.BytesIO())
    )
    assert isinstance(store._reads, LeanReads)  # bounded by lookup's own asyncio.timeout
    assert store._redis.connection_pool.connection_kwargs["socket_timeout"] == 0.25
    tls = RedisStore(
        CacheConfig(store="redis", redis_url="rediss://cache.test:6380/0", redis_timeout_ms=250),
        Metrics(),
        LogWriter(io.BytesIO()),
    )
    assert isinstance(tls._reads, RedisPyReads)  # TLS: redis-py reads, without socket_timeout
    reads = tls._reads._client.connection_pool.connection_kwargs
    assert reads["socket_timeout"] is None
    assert reads["socket_connect_timeout"] == 0.25


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


async def test_redis_lookup_on_a_hung_server_fails_within_its_bound(silent_port: int) -> None:
    stream = io.BytesIO()
    log = LogWriter(stream, flush_interval=0.001)
    config = CacheConfig(
        store="redis", redis_url=f"redis://127.0.0.1:{silent_port}/0", redis_timeout_ms=50
    )
    store = RedisStore(config, Metrics(), log)
    try:
        with pytest.raises(TimeoutError):
            # the outer wait_for only keeps a missing bound from hanging the test: it cancels
            # the lookup, which then logs nothing
            await asyncio.wait_for(store.lookup(URL, lang("en")), 10)
        log.flush()
        assert b'"operation":"lookup"' in stream.getvalue()  # lookup's own timeout fired
    finally:
        await store.close()
