"""The rate-limit stage on a fake clock: 429s, Retry-After, keys, exemptions, shadow, headers,
backend failures, and buckets that survive a reload."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import bundle_factories
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from openflare.config.loader import ConfigBundle
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.pipeline import ratelimit
from openflare.pipeline.base import Exchange
from openflare.pipeline.ratelimit import aggregate_ip
from openflare.pipeline.stored_response import RenderedResponse
from openflare.ratelimit.base import BackendHolder, BucketKey
from openflare.ratelimit.bucket import Decision, Limit
from openflare.ratelimit.memory import MemoryBackend
from openflare.ratelimit.rules import RateLimitRules

IP = "203.0.113.7"


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def bundle(rules_yaml: str) -> ConfigBundle:
    return bundle_factories.config_bundle(
        rate_limits=RateLimitRules.model_validate(yaml.safe_load(rules_yaml))
    )


class Harness:
    def __init__(self, rules_yaml: str, deps: Deps | None = None) -> None:
        self.clock = FakeClock()
        self.deps = deps or Deps(
            log=LogWriter(io.BytesIO()), ratelimit=BackendHolder(clock=self.clock)
        )
        stage = ratelimit.build(bundle(rules_yaml), self.deps)
        assert stage is not None
        self.stage = stage
        self.forwarded = 0

    async def next(self, exchange: Exchange) -> web.StreamResponse:
        self.forwarded += 1
        return web.Response(text="ok")

    async def send(
        self,
        path: str,
        *,
        method: str = "GET",
        ip: str = IP,
        headers: dict[str, str] | None = None,
    ) -> tuple[web.StreamResponse, Exchange]:
        exchange = Exchange(make_mocked_request(method, path, headers=headers or {}), 0.0, False)
        exchange.request_id = "req-1"
        exchange.path = path
        exchange.client_ip = ip
        response = await self.stage(exchange, self.next)
        return response, exchange

    async def statuses(self, path: str, n: int, **kwargs: Any) -> list[int]:
        return [(await self.send(path, **kwargs))[0].status for _ in range(n)]

    def count(self, rule_id: str, decision: str) -> float:
        value = self.deps.metrics.registry.get_sample_value(
            "openflare_ratelimit_total", {"rule_id": rule_id, "decision": decision}
        )
        return value or 0.0


def rule(rule_id: str, prefix: str = "/", rate: float = 1, burst: int = 1, **extra: Any) -> dict:
    return {"id": rule_id, "path_prefix": prefix, "rate": rate, "burst": burst, **extra}


def rules(*items: dict, **top: Any) -> str:
    return yaml.safe_dump({"rules": list(items), **top})


def body(response: web.StreamResponse) -> dict[str, Any]:
    assert isinstance(response, RenderedResponse)
    assert response.content_type == "application/json"
    return json.loads(response.body)


async def test_burst_of_2b_gives_exactly_b_then_429_with_json() -> None:
    h = Harness(rules(rule("api", "/api/", rate=1, burst=5, period="minute")))
    statuses = await h.statuses("/api/x", 10)
    assert statuses == [200] * 5 + [429] * 5
    response, exchange = await h.send("/api/x")
    assert response.status == 429
    assert body(response) == {"error": "rate_limited", "rule_id": "api", "request_id": "req-1"}
    assert response.content_type == "application/json"
    assert response.headers["Retry-After"] == "60"
    assert response.headers["Cache-Control"] == "no-store"
    assert exchange.ratelimit == "deny:api" and exchange.error == "rate_limited"
    assert h.forwarded == 5
    assert (h.count("api", "allow"), h.count("api", "deny")) == (5, 6)


async def test_retry_after_counts_down_and_is_honoured() -> None:
    h = Harness(rules(rule("r", rate=20, period="minute", burst=1)))  # a token every 3 s
    assert (await h.send("/"))[0].status == 200
    for advance, expected in ((0.0, "3"), (1.2, "2"), (0.9, "1")):
        h.clock.now += advance
        response, _ = await h.send("/")
        assert response.headers["Retry-After"] == expected
    h.clock.now += 0.9  # 3.0 s after the first request
    assert await h.statuses("/", 2) == [200, 429]


async def test_refill_is_exact() -> None:
    h = Harness(rules(rule("r", rate=2, burst=2)))
    assert await h.statuses("/", 3) == [200, 200, 429]
    h.clock.now += 0.5
    assert await h.statuses("/", 2) == [200, 429]
    h.clock.now += 0.25
    assert await h.statuses("/", 1) == [429]
    h.clock.now += 3600
    assert await h.statuses("/", 3) == [200, 200, 429]


async def test_most_specific_rule_first_and_a_denial_spends_nothing() -> None:
    h = Harness(
        rules(
            rule("outer", "/a/", burst=5, period="minute"),
            rule("inner", "/a/b/", burst=2, period="minute"),
        )
    )
    assert await h.statuses("/a/b/x", 4) == [200, 200, 429, 429]
    response, _ = await h.send("/a/b/x")
    assert body(response)["rule_id"] == "inner"
    # outer was charged for the two admitted requests only: three left
    assert await h.statuses("/a/other", 4) == [200, 200, 200, 429]
    response, _ = await h.send("/a/b/x")
    assert body(response)["rule_id"] == "inner"  # both deny; the most specific is named
    assert h.count("outer", "deny") == 2 and h.count("inner", "deny") == 4


async def test_retry_after_is_the_longest_wait_of_the_denying_rules() -> None:
    h = Harness(
        rules(
            rule("slow", "/", rate=1, period="minute", burst=1),
            rule("fast", "/x/", rate=1, burst=1),
        )
    )
    await h.send("/x/1")
    response, _ = await h.send("/x/1")
    assert body(response)["rule_id"] == "fast"
    assert response.headers["Retry-After"] == "60"


@pytest.mark.parametrize(
    ("exemptions", "path", "ip"),
    [
        ({"paths": ["/healthz"]}, "/healthz", IP),
        ({"paths": ["/free/"]}, "/free/x", IP),
        ({"cidrs": ["203.0.113.0/24"]}, "/x", IP),
        ({"cidrs": ["2001:db8::/32"]}, "/x", "2001:db8::5"),
        ({"cidrs": ["10.1.0.0/16"]}, "/x", "::ffff:10.1.2.3"),
    ],
)
async def test_exemptions(exemptions: dict[str, list[str]], path: str, ip: str) -> None:
    h = Harness(rules(rule("r", burst=1), exemptions=exemptions))
    assert await h.statuses(path, 5, ip=ip) == [200] * 5
    assert await h.statuses("/other", 2, ip="198.51.100.1") == [200, 429]


async def test_disabled_rules_and_unmatched_paths_pass() -> None:
    h = Harness(rules(rule("off", "/", enabled=False), rule("on", "/limited/", burst=1)))
    assert await h.statuses("/free", 5) == [200] * 5
    assert await h.statuses("/limited/", 2) == [200, 429]


async def test_methods() -> None:
    h = Harness(rules(rule("post", "/login", methods=["POST"], burst=1)))
    assert await h.statuses("/login", 3) == [200] * 3
    assert await h.statuses("/login", 2, method="POST") == [200, 429]


async def test_api_key_and_header_keys() -> None:
    h = Harness(
        rules(
            rule("key", "/k/", burst=2, key="api_key"),
            rule("tenant", "/t/", burst=1, key="header:X-Tenant"),
        )
    )
    a, b = {"X-API-Key": "alpha"}, {"X-API-Key": "beta"}
    assert await h.statuses("/k/", 3, headers=a) == [200, 200, 429]
    assert await h.statuses("/k/", 3, headers=b, ip="198.51.100.9") == [200, 200, 429]
    assert await h.statuses("/k/", 2, headers=a, ip="198.51.100.10") == [429, 429]  # per key
    assert await h.statuses("/k/", 3) == [200, 200, 429]  # no key: the client IP
    assert await h.statuses("/t/", 2, headers={"X-Tenant": "one"}) == [200, 429]
    assert await h.statuses("/t/", 1, headers={"X-Tenant": "two"}) == [200]


async def test_ip_path_key() -> None:
    h = Harness(rules(rule("ipp", "/p/", burst=2, key="ip_path")))
    assert await h.statuses("/p/a", 3) == [200, 200, 429]
    assert await h.statuses("/p/b", 3) == [200, 200, 429]
    assert await h.statuses("/p/a", 1, ip="198.51.100.1") == [200]
    long_path = "/p/" + "x" * 5000
    assert await h.statuses(long_path, 3) == [200, 200, 429]  # hashed, still per path
    keys = list(h.stage.backend._table)  # type: ignore[attr-defined]
    assert all(len(client) < 300 for _, client in keys)


@pytest.mark.parametrize(
    ("ip", "v4", "v6", "expected"),
    [
        ("203.0.113.7", 32, 64, "203.0.113.7"),
        ("203.0.113.7", 24, 64, "203.0.113.0/24"),
        ("2001:db8:1:2:aaaa::1", 32, 64, "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", 32, 128, "2001:db8:1:2::1"),
        ("2001:db8:1:2::1", 32, 48, "2001:db8:1::/48"),
        ("::ffff:198.51.100.4", 32, 64, "198.51.100.4"),
        ("::ffff:198.51.100.4", 16, 64, "198.51.0.0/16"),
        ("not-an-ip", 32, 64, "not-an-ip"),
    ],
)
def test_aggregate_ip(ip: str, v4: int, v6: int, expected: str) -> None:
    assert aggregate_ip(ip, v4, v6) == expected


async def test_ipv6_clients_share_their_64_by_default() -> None:
    h = Harness(rules(rule("r", burst=2)))
    assert await h.statuses("/", 1, ip="2001:db8:1:2::1") == [200]
    assert await h.statuses("/", 2, ip="2001:db8:1:2:ffff::9") == [200, 429]
    assert await h.statuses("/", 1, ip="2001:db8:1:3::1") == [200]


async def test_shadow_never_blocks_and_counts_would_block() -> None:
    h = Harness(rules(rule("s", burst=2, mode="shadow"), rule("e", "/e/", burst=100)))
    results = [await h.send("/e/x") for _ in range(5)]
    assert [r.status for r, _ in results] == [200] * 5
    assert [e.ratelimit for _, e in results] == ["allow:e"] * 2 + ["would_block:s"] * 3
    assert (h.count("s", "allow"), h.count("s", "would_block")) == (2, 3)
    assert h.count("e", "allow") == 5


async def test_file_level_shadow_mode() -> None:
    h = Harness(rules(rule("r", burst=1), mode="shadow"))
    assert await h.statuses("/", 3) == [200] * 3
    assert h.count("r", "would_block") == 2


async def test_ratelimit_headers() -> None:
    h = Harness(
        rules(
            rule("global", "/", rate=50, burst=100),
            rule("api", "/api/", rate=10, burst=20),
            rule("quiet", "/api/", rate=1, burst=100, response_headers=False),
            rule("shadow", "/api/", burst=1, mode="shadow"),
            response_headers=True,
        )
    )
    _, exchange = await h.send("/api/x")
    headers = dict(exchange.extra_headers or [])
    assert headers["RateLimit-Policy"] == '"api";q=20;w=2, "global";q=100;w=2'
    assert headers["RateLimit"] == '"api";r=19;t=1, "global";r=99;t=1'
    for _ in range(19):
        await h.send("/api/x")
    response, exchange = await h.send("/api/x")
    assert response.status == 429
    headers = dict(exchange.extra_headers or [])
    assert headers["RateLimit"] == '"api";r=0;t=2, "global";r=80;t=1'


async def test_no_headers_unless_enabled() -> None:
    h = Harness(rules(rule("r", burst=5)))
    _, exchange = await h.send("/")
    assert exchange.extra_headers is None


class DownBackend:
    name = "redis"

    async def decide(self, keys: Sequence[BucketKey], limits: Sequence[Limit]) -> Decision | None:
        return None

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("file_default", "rule_setting", "mode", "status"),
    [
        ("allow", None, "enforce", 200),
        ("deny", None, "enforce", 503),
        ("deny", "allow", "enforce", 200),
        ("allow", "deny", "enforce", 503),
        ("deny", None, "shadow", 200),  # shadow rules never block, not even here
    ],
)
async def test_backend_unavailable(
    file_default: str, rule_setting: str | None, mode: str, status: int
) -> None:
    extra = {"on_backend_error": rule_setting} if rule_setting else {}
    h = Harness(rules(rule("r", burst=1, mode=mode, **extra), on_backend_error=file_default))
    h.stage._backend = DownBackend()
    response, exchange = await h.send("/")
    assert response.status == status
    assert exchange.ratelimit == "error:r"
    assert h.count("r", "error") == 1
    assert exchange.error == ("rate_limit_unavailable" if status == 503 else "")
    if status == 503:
        assert body(response) == {
            "error": "rate_limit_unavailable",
            "rule_id": "r",
            "request_id": "req-1",
        }
        assert response.headers["Retry-After"] == "1"


async def test_build_returns_none_without_enabled_rules() -> None:
    deps = Deps(log=LogWriter(io.BytesIO()))
    assert ratelimit.build(bundle(rules()), deps) is None
    assert ratelimit.build(bundle(rules(rule("r", enabled=False))), deps) is None


async def test_buckets_survive_a_reload() -> None:
    first = Harness(rules(rule("r", burst=2, period="minute")))
    assert await first.statuses("/", 2) == [200, 200]
    second = Harness(
        rules(rule("r", burst=2, period="minute"), backend={"max_keys": 50}), deps=first.deps
    )
    second.clock = first.clock
    assert second.stage.backend is first.stage.backend
    assert isinstance(second.stage.backend, MemoryBackend)
    assert second.stage.backend.max_keys == 50
    assert await second.statuses("/", 1) == [429]
    await first.deps.close()


async def test_redis_backend_is_kept_while_its_settings_are_unchanged() -> None:
    deps = Deps(log=LogWriter(io.BytesIO()))
    redis_rules = {"type": "redis", "redis": {"url": "redis://127.0.0.1:1/0"}}
    a = ratelimit.build(bundle(rules(rule("r"), backend=redis_rules)), deps)
    b = ratelimit.build(bundle(rules(rule("r", burst=3), backend=redis_rules)), deps)
    redis_rules["redis"]["timeout_ms"] = 20  # type: ignore[index]
    c = ratelimit.build(bundle(rules(rule("r"), backend=redis_rules)), deps)
    assert a is not None and b is not None and c is not None
    assert a.backend is b.backend is not c.backend
    assert a.backend.name == "redis"
    await deps.close()


async def test_headers_only_on_routes_whose_rules_send_them() -> None:
    h = Harness(
        rules(rule("plain", "/", burst=5), rule("api", "/api/", burst=5, response_headers=True))
    )
    _, exchange = await h.send("/other")
    assert exchange.extra_headers is None
    _, exchange = await h.send("/api/x")
    assert dict(exchange.extra_headers or [])["RateLimit-Policy"] == '"api";q=5;w=5'
