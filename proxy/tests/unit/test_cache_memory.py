"""What the memory store counts against `cache.max_bytes`: each entry's real memory (checked
against tracemalloc) and the bodies being collected for storage (reservations)."""

from __future__ import annotations

import gc
import io
import json
import tracemalloc

import pytest
from cache_factories import entry as cache_entry

from openflare.cache.entry import STALE_GRACE_SECONDS, TAG_BYTES, CacheEntry, memory_cost
from openflare.cache.storage.memory import MemoryStore
from openflare.cache.storage.redis import RedisStore
from openflare.config.models import CacheConfig
from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics

HEADERS = (
    ("Content-Type", "application/octet-stream"),
    ("Date", "Sun, 29 Nov 2026 14:57:09 GMT"),
    ("Server", "uvicorn"),
    ("Cache-Control", "public, max-age=600"),
    ("ETag", '"5f3c-1a2b3c"'),
    ("Last-Modified", "Sun, 29 Nov 2026 14:00:00 GMT"),
    ("Via", "1.1 openflare"),
    ("X-Origin-Seq", "123456"),
)


def fresh(text: str) -> str:
    """A str object of its own, as one parsed from a response would be."""
    return text.encode().decode()


def entry(
    i: int,
    headers: int = 8,
    tags: int = 0,
    vary: bool = False,
    body: int = 100,
    key_padding: int = 0,
) -> CacheEntry:
    primary = fresh(f"http://127.0.0.1/cache/custom?u={i:08d}" + "p" * key_padding)
    key = primary + fresh(f"|v:{i:024d}") if vary else primary
    return cache_entry(
        key,
        primary=primary,
        headers=(HEADERS * 4)[:headers],
        body=bytes(body),
        # floats of their own, as computed for a real response (a literal would be shared);
        # a whole-second lifetime is one shared float whatever object it comes as
        request_time=1e10 + i,
        response_time=1e10 + i,
        date_value=1e10 + i,
        lifetime=600.0 + i % 1,
        vary=(fresh("accept-encoding"),) if vary else (),
        tags=tuple(fresh(f"tag-{i}-{t}") for t in range(tags)),
    )


@pytest.mark.parametrize(
    ("headers", "tags", "vary", "key_padding"),
    [
        (0, 0, False, 0),
        (8, 0, False, 0),
        (8, 0, False, 300),
        (8, 3, False, 0),
        (8, 0, True, 0),
        (24, 2, True, 100),
    ],
)
async def test_accounted_size_matches_the_memory_an_entry_really_holds(
    headers: int, tags: int, vary: bool, key_padding: int
) -> None:
    """Entries held by the store (answering builds nothing more on an entry): the accounted
    bytes are within 10 % of what tracemalloc sees allocated for them."""
    count = 500
    store = MemoryStore(max_entries=10**9, max_bytes=10**12)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        accounted = 0
        for i in range(count):
            item = entry(i, headers, tags, vary, key_padding=key_padding)
            await store.put(item)
            accounted += item.size
        gc.collect()
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        await store.close()
    assert accounted == store.size_bytes
    assert 0.9 <= accounted / real <= 1.1, (accounted / count, real / count)


def test_accounted_size_follows_the_entry_headers_key_and_tags() -> None:
    base = memory_cost(entry(1, headers=0))
    name, value = HEADERS[1]
    one_more = memory_cost(entry(1, headers=2)) - memory_cost(entry(1, headers=1))
    assert one_more == len(f"{name}: {value}\r\n")  # one more line in the block
    assert memory_cost(entry(1, headers=0, key_padding=50)) - base == 50
    assert memory_cost(entry(1, headers=0, tags=1)) - base == TAG_BYTES + len("tag-1-0")
    assert memory_cost(entry(1, headers=0, body=1000)) - base == 900
    assert entry(1).size == memory_cost(entry(1))


def test_an_entry_shares_what_other_entries_hold_equal() -> None:
    """One string for a primary equal to the key, one float per whole number of seconds."""
    url = "http://edge.test/a"
    twice = cache_entry(fresh(url), primary=fresh(url))
    assert twice.primary is twice.key  # equal strings, two objects given: one kept
    one, two = entry(1), entry(2)
    assert one.lifetime is two.lifetime  # 600.0 computed twice: one object
    assert cache_entry(lifetime=float("600")).lifetime is one.lifetime
    assert (
        cache_entry(stale_if_error=float("60")).stale_if_error
        is cache_entry(stale_while_revalidate=60).stale_while_revalidate
    )
    assert cache_entry(lifetime=0.5 + 0.25).lifetime == 0.75  # not shared, still exact
    variant = entry(1, vary=True)
    assert variant.primary != variant.key and variant.primary == one.primary


def test_an_entry_keeps_its_flags_and_a_soft_purge_copies_it() -> None:
    stored = cache_entry(
        must_revalidate=True, no_cache=False, auth_shareable=True, freshness_source="max-age"
    )
    assert stored.must_revalidate and not stored.no_cache and stored.auth_shareable
    assert not stored.invalidated and stored.effective_lifetime() == 600.0
    assert cache_entry(no_cache=True, auth_shareable=False).no_cache
    assert not cache_entry(no_cache=True, auth_shareable=False).auth_shareable
    stored.hits = 3
    purged = stored.soft_purged()
    assert purged.invalidated and purged.effective_lifetime() == 0.0
    assert not stored.invalidated  # the stored entry itself is not changed
    assert purged.must_revalidate and purged.auth_shareable and not purged.no_cache
    assert (purged.key, purged.body, purged.headers, purged.hits) == (
        stored.key, stored.body, stored.headers, 3,
    )  # fmt: skip
    assert purged.born == stored.born and purged.size == stored.size
    assert purged.freshness_source == "max-age"


def test_age_is_the_rfc_9111_current_age_from_one_stored_time() -> None:
    """The four time inputs become `born`; `age(now)` is still corrected initial age plus
    resident time, and the entry is kept past its freshness by the stale grace only."""
    stored = cache_entry(
        request_time=1_000.0,
        response_time=1_001.0,
        date_value=1_000.0,
        age_value=100.0,  # an upstream cache held it 100 s
        lifetime=600.0,
    )
    assert stored.born == 1_001.0 - 101.0  # Age plus the response delay
    assert stored.age(1_001.0) == 101.0 and stored.age(1_101.0) == 201.0
    assert stored.ttl(1_101.0) == 399.0 and stored.staleness(1_500.0) == 0.0
    assert stored.staleness(1_501.0) == 1.0
    # useless once stale for longer than any grace: counted from when it went stale (born +
    # lifetime), not from when it arrived
    assert stored.keep_until() == 900.0 + 600.0 + STALE_GRACE_SECONDS


async def test_reservations_evict_to_make_room_and_are_released() -> None:
    one = entry(0).size
    store = MemoryStore(max_entries=100, max_bytes=4 * one)
    for i in range(4):
        await store.put(entry(i))
    assert store.size_bytes == 4 * one and store.evictions == 0
    assert store.reserve(one + 1)  # a body on its way: the two oldest entries make room
    assert store.evictions == 2
    assert await store.get(entry(0).key) is None and await store.get(entry(3).key) is not None
    assert store.size_bytes + store.reserved_bytes <= store.max_bytes
    assert (await store.stats()).size_bytes == store.size_bytes + store.reserved_bytes
    await store.put(entry(9))  # stored while a reservation is held: still within budget
    assert store.size_bytes + store.reserved_bytes <= store.max_bytes
    store.release(one + 1)
    assert store.reserved_bytes == 0
    await store.close()


async def test_bodies_in_flight_never_exceed_max_bytes_on_their_own() -> None:
    store = MemoryStore(max_entries=100, max_bytes=10_000)
    assert store.reserve(6_000)
    assert not store.reserve(5_000)  # refused: nothing reserved, the caller does not store
    assert store.reserved_bytes == 6_000
    assert store.reserve(4_000)
    store.release(6_000)
    store.release(4_000)
    store.release(1)  # never below zero
    assert store.reserved_bytes == 0
    await store.close()


def test_redis_store_bounds_the_bodies_it_collects_by_max_bytes() -> None:
    store = RedisStore(
        CacheConfig(store="redis", max_bytes=10_000), Metrics(), LogWriter(io.BytesIO())
    )
    assert store.reserve(6_000)
    assert not store.reserve(5_000)
    store.release(6_000)
    assert store.reserve(10_000)


async def test_redis_bounds_unknown_when_redis_does_not_answer() -> None:
    out = io.BytesIO()
    log = LogWriter(out)
    config = CacheConfig(store="redis", redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=500)
    store = RedisStore(config, Metrics(), log)
    assert await store.check_bounds() is None
    await store.close()
    log.flush()
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert "cache_redis_bounds_unknown" in events
