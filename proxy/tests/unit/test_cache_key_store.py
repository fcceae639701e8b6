import asyncio
import time
from typing import Any

import orjson
import pytest
from cache_factories import entry as cache_entry
from multidict import CIMultiDict, CIMultiDictProxy

from openflare.cache.entry import CacheEntry
from openflare.cache.key import KeyPolicy, base_of, variant_key
from openflare.cache.singleflight import SingleFlight
from openflare.cache.storage.memory import MemoryStore
from openflare.cache.storage.redis import decode_entry, encode_entry


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


NONE = headers()


@pytest.mark.parametrize(
    ("policy", "query", "key"),
    [
        (KeyPolicy(), "b=2&a=1", "http://h/p?a=1&b=2"),
        (KeyPolicy(), "a=2&a=1", "http://h/p?a=1&a=2"),
        (KeyPolicy(), "x&y=", "http://h/p?x=&y="),
        (KeyPolicy(), "q=a+b%20c", "http://h/p?q=a+b+c"),
        (KeyPolicy(), "", "http://h/p"),
        (KeyPolicy(ignore_query=("utm_*", "gclid")), "utm_source=x&a=1&gclid=9", "http://h/p?a=1"),
        (KeyPolicy(only_query=("page",)), "page=2&sort=x", "http://h/p?page=2"),
        (KeyPolicy(ignore_query=("utm_*",)), "utm_a=1", "http://h/p"),
    ],
)
def test_primary_key_query_control(policy: KeyPolicy, query: str, key: str) -> None:
    assert policy.primary("http", "H", "/p", query, NONE) == key


def test_primary_key_includes_listed_headers_and_cookies() -> None:
    policy = KeyPolicy(headers=("X-Device",), cookies=("lang",))
    a = policy.primary(
        "http", "h", "/p", "", headers(("X-Device", "m"), ("Cookie", "lang=en; x=1"))
    )
    b = policy.primary(
        "http", "h", "/p", "", headers(("X-Device", "m"), ("Cookie", "x=2; lang=en"))
    )
    c = policy.primary("http", "h", "/p", "", headers(("X-Device", "d"), ("Cookie", "lang=en")))
    assert a == b != c
    assert base_of(a) == "http://h/p"


def test_keys_differ_for_different_paths_and_hosts() -> None:
    p = KeyPolicy()
    keys = {p.primary("http", h, path, "", NONE) for h in ("a", "b") for path in ("/x", "/x/")}
    assert len(keys) == 4


def test_variant_key() -> None:
    vary = ("accept-encoding",)
    a = variant_key("k", vary, headers(("Accept-Encoding", "gzip, br")))
    b = variant_key("k", vary, headers(("Accept-Encoding", "br,gzip")))
    c = variant_key("k", vary, headers(("Accept-Encoding", "gzip")))
    assert a == b != c
    assert variant_key("k", (), NONE) == "k"


def entry(
    key: str,
    size: int = 100,
    tags: tuple[str, ...] = (),
    primary: str | None = None,
    vary: tuple[str, ...] = (),
    lifetime: float = 60.0,
    now: float | None = None,
) -> CacheEntry:
    import time

    t = time.time() if now is None else now
    return cache_entry(
        key,
        primary=primary or key,
        headers=(("Content-Type", "text/plain"), ("ETag", '"e"')),
        body=b"x" * size,
        request_time=t,
        response_time=t,
        date_value=t,
        lifetime=lifetime,
        auth_shareable=False,
        vary=vary,
        tags=tags,
    )


async def test_memory_store_lru_respects_entry_and_byte_limits() -> None:
    store = MemoryStore(max_entries=3, max_bytes=10_000)
    for i in range(5):
        await store.put(entry(f"http://h/{i}"))
    stats = await store.stats()
    assert stats.entries == 3 and stats.evictions == 2
    assert await store.get("http://h/0") is None and await store.get("http://h/4") is not None
    await store.get("http://h/2")  # touch: now most recently used
    await store.put(entry("http://h/5"))
    assert await store.get("http://h/2") is not None and await store.get("http://h/3") is None
    big = MemoryStore(max_entries=100, max_bytes=5_000)
    for i in range(20):
        await big.put(entry(f"http://h/{i}", size=1_000))
        assert big.size_bytes <= 5_000
    assert big.size_bytes == sum(e.size for e in big._entries.values())
    await store.close()
    await big.close()


async def test_memory_store_rejects_objects_larger_than_the_store() -> None:
    store = MemoryStore(max_entries=10, max_bytes=1_000)
    await store.put(entry("http://h/big", size=5_000))
    assert (await store.stats()).entries == 0
    await store.close()


async def test_memory_store_purges_by_url_prefix_tag_and_soft() -> None:
    store = MemoryStore(max_entries=100, max_bytes=1_000_000)
    await store.put(entry("http://h/a|v:1", primary="http://h/a", vary=("x",), tags=("t1",)))
    await store.put(entry("http://h/a|v:2", primary="http://h/a", vary=("x",), tags=("t1/x",)))
    await store.put(entry("http://h/static/1", tags=("t2",)))
    await store.put(entry("http://g/static/2"))
    assert await store.get_vary("http://h/a") == ("x",)
    assert await store.purge_tags(["t1"], soft=False) == 1  # exact: t1/x is another tag
    assert await store.purge_url("http://h/a", soft=True) == 1
    soft = await store.get("http://h/a|v:2")
    assert soft is not None and soft.invalidated and soft.ttl(soft.born) == 0
    assert await store.purge_prefix("/static/", soft=False) == 2  # path prefix: any host
    assert await store.purge_all(soft=False) == 1
    assert (await store.stats()).entries == 0 and store.size_bytes == 0
    await store.close()


async def test_memory_store_finds_every_entry_of_a_url_with_indexes_only_where_needed() -> None:
    """A plain URL is its own key (no index entries); keys with extra parts (`#`) and Vary
    variants are indexed, and a URL purge or a change of Vary reaches all of them."""
    store = MemoryStore(max_entries=100, max_bytes=1_000_000)
    await store.put(entry("http://h/u"))
    assert await store.get_vary("http://h/u") == () and await store.get_vary("http://h/v") is None
    assert not store._vary and not store._variants and not store._keyed
    await store.put(entry("http://h/u#dev:m", primary="http://h/u#dev:m"))
    await store.put(entry("http://h/u#dev:d|v:1", primary="http://h/u#dev:d", vary=("x",)))
    await store.put(entry("http://h/other"))
    assert await store.purge_url("http://h/u", soft=False) == 3
    assert (await store.stats()).entries == 1 and not store._keyed and not store._variants
    await store.put(entry("http://h/w"))  # then the origin starts to vary on x
    await store.put(entry("http://h/w|v:1", primary="http://h/w", vary=("x",)))
    assert await store.get("http://h/w") is None and await store.get_vary("http://h/w") == ("x",)
    await store.put(entry("http://h/w"))  # and stops
    assert await store.get("http://h/w|v:1") is None and await store.get_vary("http://h/w") == ()
    assert not store._vary and not store._variants
    assert store.size_bytes == sum(e.size for e in store._entries.values())
    await store.close()


async def test_memory_store_caps_variants_per_url() -> None:
    store = MemoryStore(max_entries=100, max_bytes=1_000_000, max_variants=2)
    for i in range(4):
        await store.put(entry(f"http://h/a|v:{i}", primary="http://h/a", vary=("x",)))
    assert [await store.get(f"http://h/a|v:{i}") is not None for i in range(4)] == [
        False,
        False,
        True,
        True,
    ]
    await store.close()


async def test_memory_store_sweep_drops_expired() -> None:
    store = MemoryStore(max_entries=10, max_bytes=1_000_000)
    # no validator: nothing keeps it for revalidation
    old = cache_entry("http://h/old", lifetime=1, request_time=1_000.0, response_time=1_000.0)
    await store.put(old)
    await store.put(entry("http://h/new"))
    assert store.sweep() == 1
    assert (await store.stats()).entries == 1
    await store.close()


def test_redis_encoding_round_trip() -> None:
    original = cache_entry(
        "http://h/a|v:1",
        primary="http://h/a",
        headers=(("Content-Type", "text/plain"), ("ETag", '"e"')),
        body=b"body",
        request_time=1_000.0,
        response_time=1_002.0,
        date_value=995.0,
        age_value=30.0,
        lifetime=600.0,
        stale_while_revalidate=5.0,
        stale_if_error=7.5,
        must_revalidate=True,
        no_cache=False,
        auth_shareable=True,
        vary=("accept",),
        tags=("a", "b"),
        freshness_source="max-age",
        invalidated=True,
        hits=4,
    )
    copy = decode_entry(encode_entry(original))
    assert copy.body == original.body and copy.headers == original.headers
    assert copy.tags == ("a", "b") and copy.vary == ("accept",) and copy.etag == '"e"'
    assert (copy.key, copy.primary, copy.status, copy.reason) == (
        original.key, original.primary, 200, "OK",
    )  # fmt: skip
    assert copy.age(2_000.0) == original.age(2_000.0) == 2_000.0 - 1_002.0 + 32.0
    assert copy.keep_until() == original.keep_until()
    assert (copy.lifetime, copy.stale_while_revalidate, copy.stale_if_error) == (600.0, 5.0, 7.5)
    assert copy.must_revalidate and not copy.no_cache and copy.auth_shareable
    assert copy.invalidated and copy.freshness_source == "max-age"
    assert copy.hits == 0  # counted per store, not written


def test_redis_reads_entries_written_with_the_four_time_fields() -> None:
    """Entries an older proxy wrote keep their request/response times, Date and Age: the age
    read back is the RFC 9111 §4.2.3 one (corrected initial age plus resident time)."""
    written = cache_entry("http://h/a", headers=(("ETag", '"e"'),), body=b"body")
    raw = encode_entry(written)
    length = int.from_bytes(raw[:4], "big")
    meta = orjson.loads(raw[4 : 4 + length])
    meta |= {"request_time": 1_000.0, "response_time": 1_004.0, "date_value": 990.0}
    meta |= {"age_value": 3.0, "lifetime": 60.0}
    encoded = orjson.dumps(meta)
    old = decode_entry(len(encoded).to_bytes(4, "big") + encoded + b"body")
    # apparent age 14 s (response time − Date) beats 3 s of Age + 4 s of delay
    assert old.age(1_010.0) == 14.0 + 6.0
    assert old.age(900.0) == 0.0  # a clock stepped back: never a negative age
    assert old.ttl(1_010.0) == 40.0 and old.etag == '"e"' and old.body == b"body"


def test_redis_reads_entries_written_before_the_header_block() -> None:
    """Entries another (older) proxy wrote, headers as pairs: read, with the stored
    Cache-Status left out (each answer sets its own) and the validators from the headers."""
    import orjson

    now = time.time()
    meta: dict[str, Any] = {
        "key": "http://h/a", "primary": "http://h/a", "status": 200, "reason": "OK",
        "request_time": now, "response_time": now,
    }  # fmt: skip
    meta |= {
        "headers": [["Content-Type", "text/plain"], ["Cache-Status", "up; hit"], ["ETag", '"e"']],
        "date_value": None, "age_value": 0.0, "lifetime": 60.0, "stale_while_revalidate": 0.0,
        "stale_if_error": 0.0, "must_revalidate": False, "no_cache": False,
        "auth_shareable": False, "vary": [], "tags": ["t"], "etag": '"e"', "last_modified": None,
        "freshness_source": "max-age", "invalidated": False,
    }  # fmt: skip
    raw = orjson.dumps(meta)
    old = decode_entry(len(raw).to_bytes(4, "big") + raw + b"body")
    assert old.headers == b'Content-Type: text/plain\r\nETag: "e"\r\n'
    assert old.etag == '"e"' and old.last_modified is None and old.body == b"body"
    assert old.tags == ("t",) and old.lifetime == 60.0


async def test_singleflight_runs_once_and_waiters_time_out() -> None:
    flights: SingleFlight[int] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    leader = asyncio.create_task(flights.join("k", fetch, 1.0))
    waiters = [asyncio.create_task(flights.join("k", fetch, 1.0)) for _ in range(5)]
    impatient = asyncio.create_task(flights.join("k", fetch, 0.01))
    await asyncio.sleep(0.05)
    assert await impatient == (None, False)
    release.set()
    assert await leader == (42, True)
    assert [await w for w in waiters] == [(42, False)] * 5
    assert calls == 1 and not flights.in_flight("k")


async def test_singleflight_survives_a_departing_leader() -> None:
    flights: SingleFlight[int] = SingleFlight()

    async def fetch() -> int:
        await asyncio.sleep(0.05)
        return 7

    leader = asyncio.create_task(flights.join("k", fetch, 1.0))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flights.join("k", fetch, 1.0))
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await waiter == (7, False)
