"""Rate limiting end to end (configs/rate-limit.test.yaml on the session stack; proxies of their
own for trusted proxies, CIDR exemptions, reloads and the Redis backend).

Exactness: the tight rules refill one token per minute (or per 3 s / 0.5 s where the test is
about refill), so a burst of 2·b answers exactly b successes, never "about b"."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from harness import Metrics, ProxyProcess, Stack

if TYPE_CHECKING:
    from redis_support import RedisServer

pytest_plugins = ("redis_support",)  # the redis_server fixture

ProxyFactory = Callable[..., ProxyProcess]


def uid() -> str:
    return uuid.uuid4().hex[:12]


def statuses(responses: Sequence[httpx.Response]) -> list[int]:
    return [r.status_code for r in responses]


def burst(client: httpx.Client, path: str, n: int, **kwargs: Any) -> list[httpx.Response]:
    return [client.get(path, **kwargs) for _ in range(n)]


def rl_total(metrics: Metrics, rule_id: str, decision: str) -> float:
    return metrics.value("openflare_ratelimit_total", rule_id=rule_id, decision=decision)


def assert_429(response: httpx.Response, rule_id: str) -> None:
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body == {
        "error": "rate_limited",
        "rule_id": rule_id,
        "request_id": response.headers["x-request-id"],
    }
    assert response.headers["retry-after"].isdigit()
    assert int(response.headers["retry-after"]) >= 1


# --------------------------------------------------------------------------------------------
# the session stack (configs/rate-limit.test.yaml)


def test_burst_of_2b_gets_exactly_b(stack: Stack, client: httpx.Client) -> None:
    path = f"/path-test/rl-burst/{uid()}"
    before = stack.metrics()
    responses = burst(client, path, 20)
    assert statuses(responses) == [200] * 10 + [429] * 10
    for response in responses[10:]:
        assert_429(response, "rl-burst")
        # one token per minute, ~0 s elapsed: the next one is 60 s away (not a constant 1)
        assert 58 <= int(response.headers["retry-after"]) <= 60
    after = stack.metrics()
    assert rl_total(after, "rl-burst", "allow") - rl_total(before, "rl-burst", "allow") == 10
    assert rl_total(after, "rl-burst", "deny") - rl_total(before, "rl-burst", "deny") == 10


def test_concurrent_burst_of_2b_gets_exactly_b(stack: Stack) -> None:
    path = f"/path-test/rl-concurrent/{uid()}"

    def one(_: int) -> int:
        with stack.client() as c:
            return c.get(path).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    assert sorted(results) == [200] * 10 + [429] * 10


def test_ratelimit_headers(client: httpx.Client) -> None:
    path = f"/path-test/rl-burst/{uid()}"
    first = client.get(path)
    # burst 10 refilled at 1/min: a 10-request quota over a 600 s window
    assert first.headers["ratelimit-policy"] == '"rl-burst";q=10;w=600'
    assert first.headers["ratelimit"] == '"rl-burst";r=9;t=60'
    for _ in range(9):
        client.get(path)
    denied = client.get(path)
    assert denied.status_code == 429
    assert denied.headers["ratelimit"].startswith('"rl-burst";r=0;t=')
    plain = client.get(f"/path-test/rl-concurrent/{uid()}")  # a rule without headers
    assert "ratelimit" not in plain.headers and "ratelimit-policy" not in plain.headers


def test_retry_after_is_computed_and_honoured(client: httpx.Client) -> None:
    path = f"/path-test/rl-retry/{uid()}"  # one token every 3 s, burst 1
    assert client.get(path).status_code == 200
    denied = client.get(path)
    assert_429(denied, "rl-retry")
    wait = int(denied.headers["retry-after"])
    assert wait == 3
    time.sleep(wait)
    assert client.get(path).status_code == 200  # waiting Retry-After is enough
    again = client.get(path)
    assert again.status_code == 429 and again.headers["retry-after"] == "3"


def test_waiting_one_over_r_gives_exactly_one_more(client: httpx.Client) -> None:
    path = f"/path-test/rl-refill/{uid()}"  # 2/s, burst 2
    assert statuses(burst(client, path, 3)) == [200, 200, 429]
    time.sleep(0.5)
    assert statuses(burst(client, path, 2)) == [200, 429]
    time.sleep(1.0)
    assert statuses(burst(client, path, 3)) == [200, 200, 429]  # refills to burst, no more


def test_exempt_path_is_never_limited(client: httpx.Client) -> None:
    run = uid()
    assert statuses(burst(client, f"/path-test/rl-exempt/free/{run}", 5)) == [200] * 5
    assert statuses(burst(client, f"/path-test/rl-exempt/{run}", 2)) == [200, 429]


def test_api_key_buckets(client: httpx.Client) -> None:
    path = f"/path-test/rl-key/{uid()}"
    alpha, beta = {"X-API-Key": f"alpha-{uid()}"}, {"X-API-Key": f"beta-{uid()}"}
    assert statuses(burst(client, path, 4, headers=alpha)) == [200, 200, 200, 429]
    assert statuses(burst(client, path + "/other", 1, headers=alpha)) == [429]  # per key
    assert statuses(burst(client, path, 4, headers=beta)) == [200, 200, 200, 429]


def test_ip_path_buckets(client: httpx.Client) -> None:
    run = uid()
    a, b = f"/path-test/rl-burst/{run}/a", f"/path-test/rl-burst/{run}/b"
    assert statuses(burst(client, a, 11)) == [200] * 10 + [429]
    assert statuses(burst(client, b, 1)) == [200]  # another path: another bucket


def test_header_key(client: httpx.Client) -> None:
    path = f"/path-test/rl-header/{uid()}"
    one, two = {"X-Tenant": f"one-{uid()}"}, {"X-Tenant": f"two-{uid()}"}
    assert statuses(burst(client, path, 3, headers=one)) == [200, 200, 429]
    assert statuses(burst(client, path, 2, headers=two)) == [200, 200]


def test_methods(client: httpx.Client) -> None:
    path = f"/path-test/rl-method/{uid()}"
    assert statuses(burst(client, path, 4)) == [200] * 4  # GET is not limited by this rule
    assert [client.head(path).status_code for _ in range(2)] == [200, 429]


def test_most_specific_first_and_a_denial_spends_nothing(client: httpx.Client) -> None:
    who = {"X-RL-Client": uid()}
    inner = "/path-test/rl-nest/inner/x"
    responses = burst(client, inner, 4, headers=who)
    assert statuses(responses) == [200, 200, 429, 429]
    assert_429(responses[2], "rl-inner")
    # rl-outer (burst 5) was charged for the 2 admitted requests only: 3 are left
    outer = burst(client, "/path-test/rl-nest/other", 4, headers=who)
    assert statuses(outer) == [200, 200, 200, 429]
    assert_429(outer[3], "rl-outer")
    assert outer[0].headers["ratelimit-policy"] == '"rl-outer";q=5;w=300'
    both = client.get(inner, headers=who)
    assert both.headers["ratelimit-policy"] == '"rl-inner";q=2;w=120, "rl-outer";q=5;w=300'


def test_shadow_rule_never_blocks_and_counts(stack: Stack, client: httpx.Client) -> None:
    path = f"/path-test/rl-shadow/{uid()}"
    before = stack.metrics()
    assert statuses(burst(client, path, 5)) == [200] * 5
    after = stack.metrics()
    assert (
        rl_total(after, "rl-shadow", "would_block") - rl_total(before, "rl-shadow", "would_block")
        == 4
    )
    assert rl_total(after, "rl-shadow", "allow") - rl_total(before, "rl-shadow", "allow") == 1
    assert rl_total(after, "rl-shadow", "deny") == 0


def test_disabled_rule(client: httpx.Client) -> None:
    assert statuses(burst(client, f"/path-test/rl-disabled/{uid()}", 5)) == [200] * 5


def test_metric_family(stack: Stack) -> None:
    metrics = stack.metrics()
    assert metrics.family_type("openflare_ratelimit_total") == "counter"
    decisions = {labels["decision"] for labels, _ in metrics.find("openflare_ratelimit_total")}
    assert decisions == {"allow", "deny", "would_block", "error"}  # pre-bound per rule
    assert not any(
        "/" in labels["rule_id"] for labels, _ in metrics.find("openflare_ratelimit_total")
    )


@pytest.mark.local_only
def test_ip_key_burst_and_access_log(local_stack: Stack, client: httpx.Client) -> None:
    path = "/path-test/rl-ip/x"
    responses = burst(client, path, 20)
    assert statuses(responses) == [200] * 10 + [429] * 10
    assert local_stack.proxy is not None
    denied = local_stack.proxy.access_log(responses[-1].headers["x-request-id"])
    assert denied["status"] == 429
    assert denied["ratelimit"] == "deny:rl-ip" and denied["error"] == "rate_limited"
    allowed = local_stack.proxy.access_log(responses[0].headers["x-request-id"])
    assert allowed["ratelimit"] == "allow:rl-ip"


@pytest.mark.local_only
def test_untrusted_client_cannot_choose_its_identity(
    local_stack: Stack, client: httpx.Client
) -> None:
    # 127.0.0.1 is not a trusted proxy of the session stack: X-Forwarded-For is ignored
    responses = [
        client.get("/path-test/rl-spoof/x", headers={"X-Forwarded-For": f"198.51.100.{i}"})
        for i in range(6)
    ]
    assert statuses(responses) == [200, 200, 200, 429, 429, 429]


@pytest.mark.local_only
def test_shadow_is_logged(local_stack: Stack, client: httpx.Client) -> None:
    path = f"/path-test/rl-shadow/{uid()}"
    client.get(path)
    second = client.get(path)
    assert second.status_code == 200
    assert local_stack.proxy is not None
    line = local_stack.proxy.access_log(second.headers["x-request-id"])
    assert line["ratelimit"] == "would_block:rl-shadow" and line["status"] == 200


# --------------------------------------------------------------------------------------------
# proxies of our own: trusted proxies, CIDR exemptions, IPv6 aggregation, reloads


def write_rules(tmp_path: Path, rules: list[dict[str, Any]], **top: Any) -> Path:
    path = tmp_path / f"rate-limit-{uid()}.yaml"
    path.write_text(yaml.safe_dump({"rules": rules, **top}, sort_keys=False), encoding="utf-8")
    return path


def start_proxy(
    proxy_factory: ProxyFactory,
    rules_path: Path,
    trusted: Sequence[str] = ("127.0.0.1/32", "10.255.0.0/16"),
) -> ProxyProcess:
    return proxy_factory(
        {
            "security": {"trusted_proxies": list(trusted)},
            "rule_files": {"rate_limit": str(rules_path)},
        }
    )


def proxy_client(proxy: ProxyProcess) -> httpx.Client:
    return httpx.Client(
        base_url=proxy.url, headers={"Host": f"127.0.0.1:{proxy.port}"}, timeout=10.0
    )


def proxy_metrics(proxy: ProxyProcess) -> Metrics:
    response = httpx.get(proxy.admin_url + "/metrics", timeout=5.0)
    response.raise_for_status()
    return Metrics.parse(response.text)


def xff(value: str) -> dict[str, str]:
    return {"X-Forwarded-For": value}


PER_IP = {
    "id": "per-ip",
    "key": "ip",
    "path_prefix": "/path-test/a",
    "rate": 1,
    "period": "minute",
    "burst": 2,
}


@pytest.mark.local_only
def test_client_identity_behind_trusted_proxies(
    proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    """One proxy that trusts 127.0.0.1 and 10.255.0.0/16: X-Forwarded-For resolution,
    spoofing attempts, IPv6 aggregation, CIDR exemptions and the api_key fallback."""
    keyed = {**PER_IP, "id": "keyed", "key": "api_key", "path_prefix": "/path-test/keyed/"}
    rules = write_rules(tmp_path, [PER_IP, keyed], exemptions={"cidrs": ["192.0.2.0/24"]})
    proxy = start_proxy(proxy_factory, rules)
    with proxy_client(proxy) as c:
        # behind a trusted proxy, the client is the rightmost untrusted address
        assert statuses(burst(c, "/path-test/a", 3, headers=xff("198.51.100.1"))) == [
            200,
            200,
            429,
        ]
        assert statuses(burst(c, "/path-test/a", 2, headers=xff("198.51.100.2"))) == [200, 200]
        # a client prepending addresses of its choice is still itself
        assert c.get("/path-test/a", headers=xff("6.6.6.6, 198.51.100.1")).status_code == 429
        assert c.get("/path-test/a", headers=xff("7.7.7.7, 198.51.100.1")).status_code == 429
        # trusted hops on the right are skipped
        chain = xff("198.51.100.3, 10.255.0.9, 10.255.0.8")
        assert statuses(burst(c, "/path-test/a", 2, headers=chain)) == [200, 200]
        assert c.get("/path-test/a", headers=xff("198.51.100.3")).status_code == 429
        # IPv6 clients are normalized and share their /64
        assert c.get("/path-test/a", headers=xff("2001:DB8:1:2::1")).status_code == 200
        assert c.get("/path-test/a", headers=xff("2001:db8:1:2:ffff::9")).status_code == 200
        assert c.get("/path-test/a", headers=xff("2001:db8:1:2::77")).status_code == 429
        assert c.get("/path-test/a", headers=xff("2001:db8:1:3::1")).status_code == 200
        # the peer itself, without the header
        assert statuses(burst(c, "/path-test/a", 3)) == [200, 200, 429]
        # an exempt network is never limited; its neighbour is
        assert statuses(burst(c, "/path-test/a", 6, headers=xff("192.0.2.77"))) == [200] * 6
        assert statuses(burst(c, "/path-test/a", 3, headers=xff("192.0.3.1"))) == [200, 200, 429]
        # api_key: without a key the client IP is the key, so omitting it does not escape;
        # with one, the key has its own bucket
        client = xff("198.51.100.9")
        assert statuses(burst(c, "/path-test/keyed/x", 3, headers=client)) == [200, 200, 429]
        keyed_client = {"X-API-Key": "k1", **client}
        assert statuses(burst(c, "/path-test/keyed/x", 3, headers=keyed_client)) == [
            200,
            200,
            429,
        ]


def admin_reload(proxy: ProxyProcess) -> httpx.Response:
    return httpx.post(
        proxy.admin_url + "/admin/config/reload",
        headers={"Authorization": f"Bearer {proxy.token}"},
        timeout=10.0,
    )


@pytest.mark.local_only
def test_buckets_survive_reloads_and_bad_files_are_refused(
    proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    rules_path = write_rules(tmp_path, [PER_IP])
    proxy = start_proxy(proxy_factory, rules_path)
    with proxy_client(proxy) as c:
        assert statuses(burst(c, "/path-test/a", 3)) == [200, 200, 429]
        # a new rule file (another rule added): a new runtime, the same buckets
        other = {**PER_IP, "id": "other", "path_prefix": "/x/"}
        rules_path.write_text(yaml.safe_dump({"rules": [PER_IP, other]}), encoding="utf-8")
        reload = admin_reload(proxy)
        assert reload.status_code == 200 and reload.json()["result"] == "ok"
        assert c.get("/path-test/a").status_code == 429
        # an invalid file is refused, naming the rule; the running rules keep serving
        rules_path.write_text(
            yaml.safe_dump({"rules": [{**PER_IP, "key": "cookie"}]}), encoding="utf-8"
        )
        reload = admin_reload(proxy)
        assert reload.status_code == 422
        errors = reload.json()["errors"]
        assert len(errors) == 1 and "rules[per-ip].key: key must be ip" in errors[0]
        assert c.get("/path-test/a").status_code == 429
        assert c.get("/path-test/a", headers=xff("198.51.100.1")).status_code == 200


# --------------------------------------------------------------------------------------------
# the Redis backend, on a real redis-server


def redis_rules(
    tmp_path: Path, server: RedisServer, rules: list[dict[str, Any]], **redis: Any
) -> Path:
    # generous timeouts unless a test is about them: a busy CI machine opening 20 connections
    # at once must not turn into a fail-open "pass"
    settings = {
        "url": server.url,
        "key_prefix": f"t{uid()}:",
        "timeout_ms": 2000,
        "connect_timeout_ms": 2000,
        **redis,
    }
    return write_rules(tmp_path, rules, backend={"type": "redis", "redis": settings})


SHARED = {
    "id": "shared",
    "key": "ip",
    "path_prefix": "/path-test/seq/",
    "rate": 1,
    "period": "minute",
    "burst": 10,
}


@pytest.mark.local_only
def test_two_proxies_on_one_redis_admit_b_in_total(
    proxy_factory: ProxyFactory, tmp_path: Path, redis_server: RedisServer
) -> None:
    concurrent = {**SHARED, "id": "shared-burst", "path_prefix": "/path-test/burst/"}
    rules = redis_rules(tmp_path, redis_server, [SHARED, concurrent])
    a, b = start_proxy(proxy_factory, rules), start_proxy(proxy_factory, rules)
    # one client alternating between the two replicas
    with proxy_client(a) as ca, proxy_client(b) as cb:
        responses = [(ca if i % 2 == 0 else cb).get("/path-test/seq/x") for i in range(20)]
    assert statuses(responses) == [200] * 10 + [429] * 10
    for response in responses[10:]:
        assert_429(response, "shared")
        assert 58 <= int(response.headers["retry-after"]) <= 60
    allowed = sum(rl_total(proxy_metrics(p), "shared", "allow") for p in (a, b))
    denied = sum(rl_total(proxy_metrics(p), "shared", "deny") for p in (a, b))
    assert (allowed, denied) == (10, 10)
    client = redis_server.client()
    (key,) = client.keys("*shared:127.0.0.1")
    assert 0 < client.pttl(key) <= 600_000  # the key goes when the bucket is full again

    # 40 requests at once, spread over both replicas
    def one(i: int) -> int:
        with proxy_client((a, b)[i % 2]) as c:
            return c.get("/path-test/burst/y").status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(one, range(40)))
    assert sorted(results) == [200] * 10 + [429] * 30


@pytest.mark.local_only
def test_redis_outage_follows_on_backend_error_then_recovers(
    proxy_factory: ProxyFactory, tmp_path: Path, redis_server: RedisServer
) -> None:
    base = {"key": "ip", "rate": 1, "period": "minute", "burst": 2}
    rules = redis_rules(
        tmp_path,
        redis_server,
        [
            {**base, "id": "open", "path_prefix": "/path-test/open/"},
            {
                **base,
                "id": "closed",
                "path_prefix": "/path-test/closed/",
                "on_backend_error": "deny",
            },
        ],
        timeout_ms=200,
        connect_timeout_ms=200,
        retry_interval_ms=300,
        error_log_interval_s=60,
    )
    proxy = start_proxy(proxy_factory, rules)
    with proxy_client(proxy) as c:
        assert statuses(burst(c, "/path-test/open/a", 3)) == [200, 200, 429]
        assert statuses(burst(c, "/path-test/closed/a", 3)) == [200, 200, 429]

        redis_server.stop()
        assert statuses(burst(c, "/path-test/open/a", 5)) == [200] * 5  # fail open
        closed = burst(c, "/path-test/closed/a", 5)
        assert statuses(closed) == [503] * 5  # fail closed
        assert closed[0].json() == {
            "error": "rate_limit_unavailable",
            "rule_id": "closed",
            "request_id": closed[0].headers["x-request-id"],
        }
        assert closed[0].headers["retry-after"] == "1"
        metrics = proxy_metrics(proxy)
        assert rl_total(metrics, "open", "error") == 5
        assert rl_total(metrics, "closed", "error") == 5
        assert metrics.value("openflare_ratelimit_backend_errors_total", backend="redis") >= 1
        proxy.wait_log(event="ratelimit_backend_error", backend="redis")
        errors = [r for r in proxy.log_records() if r.get("event") == "ratelimit_backend_error"]
        assert len(errors) == 1  # once per error_log_interval_s, not once per request
        denied_line = proxy.access_log(closed[0].headers["x-request-id"])
        assert denied_line["ratelimit"] == "error:closed" and denied_line["status"] == 503
        assert denied_line["error"] == "rate_limit_unavailable"

        redis_server.start()  # same port, empty data
        time.sleep(0.4)  # past retry_interval_ms: the next request probes Redis
        assert statuses(burst(c, "/path-test/open/a", 3)) == [200, 200, 429]
        assert statuses(burst(c, "/path-test/closed/a", 3)) == [200, 200, 429]
        proxy.wait_log(event="ratelimit_backend_recovered", backend="redis")


@pytest.mark.local_only
def test_hung_redis_costs_at_most_the_timeout(
    proxy_factory: ProxyFactory, tmp_path: Path, redis_server: RedisServer
) -> None:
    rule = {"id": "r", "key": "ip", "path_prefix": "/path-test/", "rate": 1, "burst": 100}
    rules = redis_rules(
        tmp_path,
        redis_server,
        [rule],
        timeout_ms=150,
        connect_timeout_ms=150,
        retry_interval_ms=1000,
    )
    proxy = start_proxy(proxy_factory, rules)
    with proxy_client(proxy) as c:
        assert c.get("/path-test/h").status_code == 200
        redis_server.pause()
        try:
            started = time.monotonic()
            assert c.get("/path-test/h").status_code == 200  # fail open after the timeout
            first = time.monotonic() - started
            started = time.monotonic()
            assert statuses(burst(c, "/path-test/h", 5)) == [200] * 5
            rest = time.monotonic() - started
        finally:
            redis_server.resume()
        assert 0.14 <= first < 1.0
        assert rest < 0.5  # within retry_interval: no request waits on the dead server
        time.sleep(1.1)
        before = rl_total(proxy_metrics(proxy), "r", "allow")
        assert c.get("/path-test/h").status_code == 200
        assert rl_total(proxy_metrics(proxy), "r", "allow") == before + 1  # Redis decided


@pytest.mark.local_only
def test_lua_script_equals_the_pure_math(redis_server: RedisServer) -> None:
    """The script run with fixed times (ARGV[1]) against random sequences gives the same
    admissions and backlogs as bucket.decide."""
    from openflare.ratelimit.bucket import Limit, decide
    from openflare.ratelimit.redis import SCRIPT

    client = redis_server.client()
    script = client.register_script(SCRIPT)
    rng = random.Random(7)
    for case in range(30):
        limits = [
            Limit.of(rng.choice([0.5, 1, 3, 10]), rng.randint(1, 5), enforce=True),
            Limit.of(rng.choice([1, 2, 7]), rng.randint(1, 4), enforce=rng.random() < 0.5),
        ]
        keys = [f"eq{case}:a", f"eq{case}:b"]
        tats: list[float | None] = [None, None]
        now = 1000.0
        for _ in range(40):
            now += rng.choice([0.0, 0.0, 0.05, 0.1, 1 / 3, 0.5, 2.0])
            pure = decide(tats, now, limits)
            args = [repr(now * 1e6)]
            for limit in limits:
                args += [
                    repr(limit.interval * 1e6),
                    repr(limit.tau * 1e6),
                    "1" if limit.enforce else "0",
                ]
            reply = script(keys=keys, args=args)
            assert bool(reply[0]) == pure.admitted
            assert [bool(reply[1]), bool(reply[3])] == list(pure.allowed)
            assert reply[2] == pytest.approx(pure.backlog[0] * 1e6, abs=1)
            assert reply[4] == pytest.approx(pure.backlog[1] * 1e6, abs=1)
            tats = [t if t is not None else old for t, old in zip(pure.tats, tats, strict=True)]
