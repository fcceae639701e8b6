"""The dashboard's pure parts: percentile estimates, snapshots and their differences, secret
redaction, and the ring of recent refusals (admin/stats_routes.py, observability/recent.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from openflare.admin.stats_routes import (
    REDACTED,
    Sampler,
    bucket_delta,
    histogram_quantile,
    merge_buckets,
    read_counter,
    read_histogram,
    redact,
    redact_url,
    series,
)
from openflare.observability.metrics import Metrics
from openflare.observability.recent import RecentEvents
from openflare.pipeline.base import Exchange

INF = math.inf
BOUNDS = (0.1, 0.2, 0.5, 1.0, INF)


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, (0, 0, 0, 0, 0), None),  # no observations
        (0.5, (10, 10, 10, 10, 10), 0.05),  # all in the first bucket: linear from 0
        (0.5, (0, 10, 10, 10, 10), 0.15),  # all in (0.1, 0.2]
        (1.0, (0, 10, 10, 10, 10), 0.2),
        (0.95, (50, 90, 100, 100, 100), 0.35),  # rank 95 in (0.2, 0.5]: halfway
        (0.99, (0, 0, 0, 0, 10), 1.0),  # only +Inf: the largest finite bound
        (0.5, (0, 0, 0, 5, 10), 1.0),  # rank 5 reached in the 1.0 bucket
        (0.99, (0, 0, 0, 5, 10), 1.0),  # rank in +Inf
    ],
)
def test_histogram_quantile(q: float, counts: tuple[float, ...], expected: float | None) -> None:
    found = histogram_quantile(q, (BOUNDS, counts))
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


def test_bucket_delta_and_merge() -> None:
    old = (BOUNDS, (1.0, 2.0, 3.0, 3.0, 3.0))
    new = (BOUNDS, (2.0, 5.0, 6.0, 7.0, 8.0))
    assert bucket_delta(new, old) == (BOUNDS, (1.0, 3.0, 3.0, 4.0, 5.0))
    assert bucket_delta(new, None) == new
    assert bucket_delta(new, ((1.0, INF), (0.0, 0.0))) == new  # other bounds: no difference
    assert merge_buckets([old, new]) == (BOUNDS, (3.0, 7.0, 9.0, 10.0, 11.0))
    assert merge_buckets([]) == ((), ())


def test_reading_prometheus_families() -> None:
    metrics = Metrics()
    metrics.request_child("api", "GET", 200).inc(3)
    metrics.request_child("api", "GET", 503).inc()
    metrics.waf_decision("sqli-union-select", "block")
    counts = read_counter(metrics.requests)
    assert counts[("api", "GET", "2xx", "200")] == 3
    assert counts[("api", "GET", "5xx", "503")] == 1
    assert read_counter(metrics.waf_decisions) == {("sqli-union-select", "block"): 1.0}
    assert read_counter(metrics.ratelimit_decisions) == {}
    latency = metrics.route_children("api")[0]
    latency.observe(0.003)
    metrics.route_children("static")[0].observe(0.2)
    by_route = read_histogram(metrics.request_duration, "route")
    assert set(by_route) == {"api", "static"}
    bounds, cumulative = by_route["api"]
    assert math.isinf(bounds[-1]) and cumulative[-1] == 1
    assert merge_buckets(by_route.values())[1][-1] == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sampler_baseline_and_series() -> None:
    metrics = Metrics()
    clock = Clock()
    sampler = Sampler(metrics, clock=clock, wall=clock, history=10)
    assert sampler.baseline(sampler.now(), 10) is None  # nothing sampled yet
    sampler.tick()  # t=1000
    child = metrics.request_child("r", "GET", 200)
    latency = metrics.route_children("r")[0]
    for second in (2, 4, 6):
        clock.now = 1000 + second
        child.inc(second * 10)
        latency.observe(0.004)
        sampler.tick()
    now = sampler.now()
    base = sampler.baseline(now, 4)
    assert base is not None and base.at == 1002  # the newest at least 4 s old
    oldest = sampler.baseline(now, 60)
    assert oldest is not None and oldest.at == 1000  # not that much history: the oldest
    points = series(sampler.ring)
    assert [p["rps"] for p in points] == [10.0, 20.0, 30.0]
    assert all(p["error_ratio"] == 0 for p in points)
    assert all(0 < p["p95_ms"] <= 5.0 for p in points)  # in the (2.5 ms, 5 ms] bucket
    clock.now = 1008
    sampler.tick()  # no traffic
    assert series(sampler.ring)[-1] == {
        "t": 1008,
        "rps": 0.0,
        "error_ratio": None,
        "p95_ms": None,
        "in_flight": 0,
    }


def test_sampler_ring_is_bounded() -> None:
    clock = Clock()
    sampler = Sampler(Metrics(), clock=clock, wall=clock, history=3)
    for _ in range(10):
        clock.now += 2
        sampler.tick()
    assert len(sampler.ring) == 3


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@redis:6379/0", f"redis://:{REDACTED}@redis:6379/0"),
        ("redis://default:hunter2@redis:6379/0", f"redis://default:{REDACTED}@redis:6379/0"),
        ("rediss://user:p%40ss@redis/1", f"rediss://user:{REDACTED}@redis/1"),
        ("https://ghp_token123@example.com/x", f"https://{REDACTED}@example.com/x"),
        (
            "unix:///run/redis.sock?db=0&password=hunter2",
            f"unix:///run/redis.sock?db=0&password={REDACTED}",
        ),
        ("http://h/p?api_key=k1&page=2", f"http://h/p?api_key={REDACTED}&page=2"),
        ("not a url", "not a url"),
        ("/static/", "/static/"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_nested_config() -> None:
    config: dict[str, Any] = {
        "admin_api": {"enabled": True, "auth_token": "a" * 32},
        "unset": {"auth_token": None, "password": ""},
        "tracing": {"headers": {"Authorization": "Bearer x", "X-Scope": "t1"}, "endpoint": "u"},
        "cache": {"redis_url": "redis://:pw@r:6379/0", "max_entries": 5},
        "upstreams": [{"name": "o", "base_url": "http://u:pw@o"}, {"base_url": "http://o2"}],
    }
    found: list[str] = []
    out = redact(config, "proxy", found)
    assert out["admin_api"] == {"enabled": True, "auth_token": REDACTED}
    assert out["unset"] == {"auth_token": None, "password": ""}  # nothing to hide
    assert out["tracing"]["headers"] == {"Authorization": REDACTED, "X-Scope": REDACTED}
    assert out["tracing"]["endpoint"] == "u"
    assert out["cache"] == {"redis_url": f"redis://:{REDACTED}@r:6379/0", "max_entries": 5}
    assert out["upstreams"][1] == {"base_url": "http://o2"}
    assert sorted(found) == [
        "proxy.admin_api.auth_token",
        "proxy.cache.redis_url",
        "proxy.tracing.headers.Authorization",
        "proxy.tracing.headers.X-Scope",
        "proxy.upstreams[0].base_url",
    ]
    assert "pw" not in repr(out) and "Bearer x" not in repr(out)


def exchange(waf: str = "", ratelimit: str = "", request_id: str = "rid") -> Exchange:
    ex = Exchange(make_mocked_request("GET", "/search?q=secret"), 0.0, False)
    ex.request_id = request_id
    ex.path = "/search"
    ex.waf = waf
    ex.ratelimit = ratelimit
    return ex


@pytest.mark.parametrize(
    ("waf", "ratelimit", "status", "kept"),
    [
        ("block:sqli-union-select", "", 403, ("waf", "block", ["sqli-union-select"])),
        ("block:a,b", "allow:global", 403, ("waf", "block", ["a", "b"])),
        ("", "deny:rl-ip", 429, ("ratelimit", "deny", ["rl-ip"])),
        ("", "error:rl-ip", 503, ("ratelimit", "error", ["rl-ip"])),
        ("log:note", "allow:global", 404, None),  # the origin's 404, not a refusal
        ("would_block:x", "would_block:y", 404, None),  # shadow never refuses
        ("", "exempt", 403, None),
    ],
)
def test_recent_events_keep_refusals_only(
    waf: str, ratelimit: str, status: int, kept: tuple[str, str, list[str]] | None
) -> None:
    ring = RecentEvents(5)
    ring.note(exchange(waf, ratelimit), status)
    events = ring.snapshot()
    if kept is None:
        assert events == [] and ring.recorded == 0
        return
    (event,) = events
    assert (event["kind"], event["decision"], event["rule_ids"]) == kept
    assert event["request_id"] == "rid" and event["status"] == status
    assert event["path"] == "/search"  # never the query
    assert event["method"] == "GET" and "route" not in event


def test_recent_events_ring_is_bounded_newest_first() -> None:
    ring = RecentEvents(3)
    for index in range(5):
        ring.note(exchange("block:r", request_id=f"r{index}"), 403)
    assert [e["request_id"] for e in ring.snapshot()] == ["r4", "r3", "r2"]
    assert ring.snapshot(limit=1)[0]["request_id"] == "r4"
    assert ring.recorded == 5
