"""`CacheStore.peek`: the read an explain dry run makes (pipeline/cache_explain.py) leaves the
store as it was: the memory store's LRU order and hit counts, Redis's TTLs.

The Redis half runs against a real `redis-server` (started here on a free loopback port, no
persistence, like e2e/redis_support.py); without the binary the test fails and says what to
install, it is not skipped."""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from cache_factories import entry as cache_entry

from openflare.cache.entry import CacheEntry
from openflare.cache.storage.memory import MemoryStore
from openflare.cache.storage.redis import RedisStore
from openflare.config.models import CacheConfig
from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics


def entry(name: str, lifetime: float = 600.0, stored_at: float | None = None) -> CacheEntry:
    stored_at = time.time() if stored_at is None else stored_at
    return cache_entry(
        f"http://shop.test/{name}",
        headers=(("Cache-Control", f"public, max-age={int(lifetime)}"),),
        body=b"body of " + name.encode(),
        lifetime=lifetime,
        request_time=stored_at,
        response_time=stored_at,
    )


# --- memory ----------------------------------------------------------------------------------


async def test_memory_peek_does_not_move_the_entry_in_the_lru_order() -> None:
    store = MemoryStore(max_entries=2, max_bytes=10_000_000)
    try:
        await store.put(entry("a"))
        await store.put(entry("b"))
        peeked = await store.peek("http://shop.test/a")
        assert peeked is not None and peeked.body == b"body of a"
        assert list(store._entries) == ["http://shop.test/a", "http://shop.test/b"]
        await store.put(entry("c"))  # evicts the least recently used: still a
        assert await store.peek("http://shop.test/a") is None
        assert await store.peek("http://shop.test/b") is not None
        assert store.evictions == 1
    finally:
        await store.close()


async def test_memory_get_does_move_it_for_comparison() -> None:
    store = MemoryStore(max_entries=2, max_bytes=10_000_000)
    try:
        await store.put(entry("a"))
        await store.put(entry("b"))
        assert await store.get("http://shop.test/a") is not None
        await store.put(entry("c"))  # now b is the least recently used
        assert await store.peek("http://shop.test/a") is not None
        assert await store.peek("http://shop.test/b") is None
    finally:
        await store.close()


async def test_memory_peek_counts_no_hit_and_removes_nothing() -> None:
    store = MemoryStore(max_entries=10, max_bytes=10_000_000)
    try:
        await store.put(entry("a"))
        expired = entry("old", lifetime=1.0, stored_at=time.time() - 3600)
        await store.put(expired)
        for _ in range(3):
            found = await store.peek("http://shop.test/a")
            assert found is not None and found.hits == 0
        assert await store.top(5) == [("http://shop.test/a", 0), ("http://shop.test/old", 0)]
        assert await store.peek("http://shop.test/old") is None  # useless: not returned...
        assert store.entry_count() == 2  # ...but left for the sweep, like any other read effect
        assert await store.peek("http://shop.test/missing") is None
    finally:
        await store.close()


# --- redis -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: install the Debian package `redis-server` "
            "(scripts/apt-deps.sh does) or put redis-server on PATH.",
            pytrace=False,
        )
    port = _free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(tmp_path), "--protected-mode", "yes", "--daemonize", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port}", pytrace=False)
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def redis_store(redis_port: int) -> AsyncIterator[RedisStore]:
    config = CacheConfig(store="redis", redis_url=f"redis://127.0.0.1:{redis_port}/0")
    store = RedisStore(config, Metrics(), LogWriter(io.BytesIO()))
    try:
        yield store
    finally:
        await store.close()


async def test_redis_peek_is_a_plain_get_that_refreshes_no_ttl(
    redis_store: RedisStore, redis_port: int
) -> None:
    stored = entry("a")
    await redis_store.put(stored)
    raw = redis.Redis(port=redis_port)
    try:
        redis_key = redis_store._entry_key(stored.key)
        raw.pexpire(redis_key, 60_000)  # a TTL well below what put set: a refresh would show
        before = raw.pttl(redis_key)
        calls_before = _get_calls(raw)
        await asyncio.sleep(0.05)
        peeked = await redis_store.peek(stored.key)
        assert peeked is not None and peeked.body == b"body of a" and peeked.hits == 0
        after = raw.pttl(redis_key)
        assert 0 < after <= before <= 60_000  # counted down, never set back up
        stats = raw.info("commandstats")
        assert _get_calls(raw) == calls_before + 1  # one GET ...
        assert "cmdstat_getex" not in stats and "cmdstat_pexpire" in stats  # ...and no GETEX
        pexpires = stats["cmdstat_pexpire"]["calls"]
        await redis_store.peek(stored.key)
        assert raw.info("commandstats")["cmdstat_pexpire"]["calls"] == pexpires
        assert await redis_store.peek("http://shop.test/missing") is None
    finally:
        raw.close()


def _get_calls(raw: redis.Redis) -> int:
    stats = raw.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_redis_peek_reads_what_get_reads(redis_store: RedisStore) -> None:
    stored = entry("b")
    await redis_store.put(stored)
    peeked = await redis_store.peek(stored.key)
    got = await redis_store.get(stored.key)
    assert peeked is not None and got is not None
    assert (peeked.key, peeked.status, peeked.body, peeked.headers) == (
        got.key,
        got.status,
        got.body,
        got.headers,
    )
