"""Cache bounds and credentials through real proxy processes: `bypass_on_authorization`, and the
Redis store's bounds against a real `redis-server` (every key with a TTL, objects above
`max_object_bytes` never written, the startup check of `maxmemory` / `maxmemory-policy`, and
Redis's own LRU keeping the shared cache within `maxmemory`)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from harness import Stack

if TYPE_CHECKING:
    from redis_support import RedisServer

pytest_plugins = ("redis_support",)

CUSTOM = "/cache/custom"
AUTH = {"Authorization": "Bearer secret-user-token"}
PREFIX = "openflare:cache:"


def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(autouse=True)
def _fresh_counts(stack: Stack) -> None:
    stack.reset_hits()


def public_client(proxy: Any) -> httpx.Client:
    return httpx.Client(base_url=proxy.url, headers={"Host": "127.0.0.1"}, timeout=10)


def stats(proxy: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{proxy.admin_url}/admin/cache/stats",
        headers={"Authorization": f"Bearer {proxy.token}"},
        timeout=10,
    )
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


# --- bypass_on_authorization -------------------------------------------------------------------


@pytest.mark.local_only
def test_bypass_on_authorization_passes_every_credentialed_request(
    proxy_factory: Any, stack: Stack
) -> None:
    proxy = proxy_factory({"cache": {"bypass_on_authorization": True}})
    params = {"u": unique(), "cc": "public, max-age=60"}  # shareable under RFC 9111 §3.5
    with public_client(proxy) as client:
        first = client.get(CUSTOM, params=params, headers=AUTH)
        second = client.get(CUSTOM, params=params, headers=AUTH)
        assert [first.headers["x-edge-cache"], second.headers["x-edge-cache"]] == [
            "BYPASS",
            "BYPASS",
        ]
        assert second.headers["cache-status"] == "OpenFlare; fwd=bypass"
        assert stack.hits(CUSTOM) == 2  # neither stored nor answered from the cache
        anonymous = client.get(CUSTOM, params=params)
        assert anonymous.headers["x-edge-cache"] == "STORE"
        credentialed = client.get(CUSTOM, params=params, headers=AUTH)
        assert credentialed.headers["x-edge-cache"] == "BYPASS"  # not even from a stored copy
        assert client.get(CUSTOM, params=params).headers["x-edge-cache"] == "HIT"
    assert stack.hits(CUSTOM) == 4


@pytest.mark.local_only
def test_without_bypass_on_authorization_rfc_9111_decides(proxy_factory: Any, stack: Stack) -> None:
    proxy = proxy_factory({"cache": {"bypass_on_authorization": False}})
    u = unique()
    with public_client(proxy) as client:
        shareable = {"u": u, "cc": "public, max-age=60"}
        assert client.get(CUSTOM, params=shareable, headers=AUTH).headers["x-edge-cache"] == (
            "STORE"
        )
        assert client.get(CUSTOM, params=shareable, headers=AUTH).headers["x-edge-cache"] == "HIT"
        private = {"u": u + "p", "cc": "max-age=60"}
        assert client.get(CUSTOM, params=private, headers=AUTH).headers["cache-status"] == (
            "OpenFlare; fwd=miss; detail=authorization"
        )
    assert stack.hits(CUSTOM) == 2


# --- Redis bounds ------------------------------------------------------------------------------


def redis_proxy(proxy_factory: Any, redis_server: RedisServer, **cache: Any) -> Any:
    return proxy_factory({"cache": {"store": "redis", "redis_url": redis_server.url, **cache}})


@pytest.mark.local_only
def test_redis_without_maxmemory_is_reported_at_startup(
    proxy_factory: Any, redis_server: RedisServer
) -> None:
    proxy = redis_proxy(proxy_factory, redis_server)
    record = proxy.wait_log(event="cache_redis_unbounded")
    assert record["level"] == "warning" and record["maxmemory"] == 0
    assert "allkeys-lru" in record["hint"]
    assert stats(proxy)["max_bytes"] == 0  # the dashboard shows "no cap"
    with redis_server.client() as admin:
        admin.config_set("maxmemory", 32 * 1024 * 1024)
    assert stats(proxy)["max_bytes"] == 32 * 1024 * 1024  # read again, not only at startup


@pytest.mark.local_only
def test_redis_that_refuses_writes_when_full_is_reported_at_startup(
    proxy_factory: Any, redis_server: RedisServer
) -> None:
    with redis_server.client() as admin:
        admin.config_set("maxmemory", 64 * 1024 * 1024)
        admin.config_set("maxmemory-policy", "noeviction")
    proxy = redis_proxy(proxy_factory, redis_server)
    record = proxy.wait_log(event="cache_redis_noeviction")
    assert record["policy"] == "noeviction" and record["maxmemory"] == 64 * 1024 * 1024


@pytest.mark.local_only
def test_bounded_redis_every_key_expires_and_big_objects_are_not_written(
    proxy_factory: Any, redis_server: RedisServer, stack: Stack
) -> None:
    with redis_server.client() as admin:
        admin.config_set("maxmemory", 64 * 1024 * 1024)
        admin.config_set("maxmemory-policy", "allkeys-lru")
    proxy = redis_proxy(proxy_factory, redis_server, max_object_bytes=100_000)
    u = unique()
    with public_client(proxy) as client:
        tagged = client.get("/cache/tags", params={"u": u, "tags": "t1,t2"})
        assert tagged.headers["x-edge-cache"] == "STORE"
        varied = client.get(CUSTOM, params={"u": u, "cc": "max-age=60", "vary": "Accept"})
        assert varied.headers["x-edge-cache"] == "STORE"
        big = client.get(CUSTOM, params={"u": u, "cc": "max-age=60", "size": 200_000})
        assert big.status_code == 200 and len(big.content) == 200_000
        assert big.headers["cache-status"] == "OpenFlare; fwd=miss; detail=too-large"
    with redis_server.client() as admin:
        keys = [key.decode() for key in admin.scan_iter(match=PREFIX + "*")]
        kinds = sorted({key[len(PREFIX)] for key in keys})
        assert kinds == ["e", "t", "u", "v"]
        assert len([key for key in keys if key.startswith(PREFIX + "e:")]) == 2  # not the big one
        ttls = {key: admin.pttl(key) for key in keys}
        assert all(ttl > 0 for ttl in ttls.values()), ttls  # -1 would be a key that never expires
    assert stats(proxy)["max_bytes"] == 64 * 1024 * 1024
    assert not [r for r in proxy.log_records() if r.get("event", "").startswith("cache_redis_")]


@pytest.mark.local_only
def test_redis_lru_keeps_the_shared_cache_within_maxmemory(
    proxy_factory: Any, redis_server: RedisServer, stack: Stack
) -> None:
    maxmemory = 3 * 1024 * 1024
    with redis_server.client() as admin:
        admin.config_set("maxmemory", maxmemory)
        admin.config_set("maxmemory-policy", "allkeys-lru")
        evicted_before = int(admin.info("stats")["evicted_keys"])
    proxy = redis_proxy(proxy_factory, redis_server)
    u = unique()
    size = 256 * 1024
    with public_client(proxy) as client:
        for i in range(40):  # 10 MiB of bodies into a 3 MiB Redis
            response = client.get(
                CUSTOM, params={"u": f"{u}-{i}", "cc": "max-age=60", "size": size}
            )
            assert response.status_code == 200 and len(response.content) == size
            assert response.headers["x-edge-cache"] == "STORE"
        last = client.get(CUSTOM, params={"u": f"{u}-39", "cc": "max-age=60", "size": size})
        assert last.headers["x-edge-cache"] == "HIT"  # the most recent entry is still there
    with redis_server.client() as admin:
        memory = admin.info("memory")
        assert int(memory["used_memory"]) <= maxmemory
        assert int(admin.info("stats")["evicted_keys"]) > evicted_before
    assert stack.hits(CUSTOM) == 40
    metrics = httpx.get(f"{proxy.admin_url}/metrics", timeout=10).text
    assert 'openflare_cache_operations_total{operation="error"}' not in metrics
