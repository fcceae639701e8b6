"""Observability end to end: metrics, traces, correlated logs, dashboards and alerts.

* Metrics: 1,000 random paths do not add a single series; `promtool check metrics` accepts a
  real scrape; `/metrics` negotiates OpenMetrics and then carries trace-id exemplars.
* Dashboards and alerts: a real Prometheus (Debian package) scrapes a proxy every second while
  the test drives traffic of every kind; every panel query, every dashboard variable and every
  alert expression is evaluated through Prometheus' HTTP API and must return data, and every
  alert of dashboards/alerts/ must become pending or firing.
* Traces: an OTLP/HTTP receiver (opentelemetry-proto) gets the span trees of a HIT, a MISS, a
  WAF block and a 429; an incoming `traceparent` is continued and the origin receives one with
  the same trace id; an unreachable collector costs the requests nothing.

Every test here starts processes of its own (proxies, Prometheus, a receiver): `local_only`.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import (
    CONFIGS_DIR,
    REPO_ROOT,
    Metrics,
    ProxyProcess,
    Stack,
    closed_port,
    load_test_config,
)
from otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from prometheus_support import (
    OPENMETRICS_ACCEPT,
    PrometheusServer,
    Target,
    check_openmetrics,
    promtool_check_metrics,
)

pytestmark = pytest.mark.local_only

ProxyFactory = Callable[..., ProxyProcess]
DASHBOARDS_DIR = REPO_ROOT / "dashboards"
ALERT_RULES = DASHBOARDS_DIR / "alerts" / "openflare-alerts.yaml"
NAMESPACE = "openflare-e2e"
SQLI = "1' OR '1'='1"
GIVEN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GIVEN_PARENT = "00f067aa0ba902b7"
FAST_EXPORT = {"schedule_delay_ms": 100}


def uid() -> str:
    return uuid.uuid4().hex[:12]


def client_for(proxy: ProxyProcess, **kwargs: Any) -> httpx.Client:
    headers = {"Host": f"127.0.0.1:{proxy.port}", **kwargs.pop("headers", {})}
    return httpx.Client(base_url=proxy.url, headers=headers, timeout=10.0, **kwargs)


def scrape(proxy: ProxyProcess, accept: str | None = None) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    response = httpx.get(proxy.admin_url + "/metrics", headers=headers, timeout=10.0)
    response.raise_for_status()
    return response


def traced(receiver: OtlpReceiver, **extra: Any) -> dict[str, Any]:
    return {"tracing": {"enabled": True, "endpoint": receiver.endpoint, **FAST_EXPORT, **extra}}


# --------------------------------------------------------------------------------------------
# metrics: bounded labels, promtool, OpenMetrics


def series_by_family(metrics: Metrics) -> dict[str, int]:
    """Distinct series (sample name + labels) per `openflare_*` family."""
    families = sorted(
        (f for f in metrics.families() if f.startswith("openflare_")), key=len, reverse=True
    )
    seen: dict[str, set[tuple[str, frozenset[tuple[str, str]]]]] = {f: set() for f in families}
    for name, labels, _ in metrics.samples:
        family = next((f for f in families if name.startswith(f)), None)
        if family is not None:
            seen[family].add((name, frozenset(labels.items())))
    return {family: len(series) for family, series in seen.items()}


def random_token(rng: random.Random, n: int = 10) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=n))


OTHER_METHODS = ("PURGE", "PROPFIND", "MKCOL", "DELETE", "OPTIONS")


def random_request(
    client: httpx.Client, port: int, rng: random.Random, index: int, kinds: int
) -> tuple[str, str]:
    """One request with a random path (and host, query, id, client...) of one of several
    kinds; returns (the random token, what kind it was)."""
    kind = index % kinds
    token = random_token(rng)
    headers = {
        "Host": f"127.0.0.1:{port}",
        "X-Request-ID": f"rq-{token}",
        "X-Forwarded-For": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "User-Agent": f"agent-{token}",
        "Cookie": f"c{token}={token}",
    }
    method = "GET"
    if kind == 0:
        path = f"/static/{token}.css"
    elif kind == 1:
        path = f"/path-test/{token}/{random_token(rng)}?{token}={token}"
    elif kind == 2:
        path = f"/api/{token}?page={rng.randrange(10_000)}"
    elif kind == 3:
        path = f"/{token}"
        headers["Host"] = f"{token}.example.test"  # no route → 404
    elif kind == 4:
        path = f"/{token}%2F{token}"  # normalize → 400
    elif kind == 5:
        path = f"/{token}?q={SQLI}&{token}=1"  # WAF → 403
    else:
        path = f"/debug/echo/{token}"
        method = OTHER_METHODS[(index // kinds) % len(OTHER_METHODS)]
    client.request(method, path, headers=headers)
    return token, str(kind)


@pytest.mark.parametrize("kinds", [7])
def test_series_do_not_grow_with_random_paths(proxy_factory: ProxyFactory, kinds: int) -> None:
    proxy = proxy_factory({})
    rng = random.Random(6)
    with httpx.Client(base_url=proxy.url, timeout=10.0) as client, ThreadPoolExecutor(8) as pool:
        # warm-up: every kind of request (and every method) once before counting series
        list(pool.map(lambda i: random_request(client, proxy.port, rng, i, kinds), range(70)))
        before = series_by_family(Metrics.parse(scrape(proxy).text))
        sent = list(
            pool.map(lambda i: random_request(client, proxy.port, rng, i, kinds), range(1000))
        )
    assert Counter(kind for _, kind in sent) == {
        str(k): len(range(k, 1000, kinds)) for k in range(kinds)
    }
    text = scrape(proxy).text
    after = series_by_family(Metrics.parse(text))

    grown = {f: (before.get(f, 0), n) for f, n in after.items() if n != before.get(f, 0)}
    assert not grown, f"series count changed with random paths (before, after): {grown}"
    leaked = [token for token, _ in sent if token in text]
    assert not leaked, f"request values became label values: {leaked[:5]}"
    assert Metrics.parse(text).value("openflare_requests_total") >= 1000 + 70
    # every family the issue names is there
    expected = {
        "openflare_requests_total",
        "openflare_request_duration_seconds",
        "openflare_response_bytes_total",
        "openflare_in_flight_requests",
        "openflare_cache_operations_total",
        "openflare_cache_requests_total",
        "openflare_cache_size_bytes",
        "openflare_cache_entries",
        "openflare_cache_evictions_total",
        "openflare_cache_collapsed_requests_total",
        "openflare_cache_stale_served_total",
        "openflare_waf_decisions_total",
        "openflare_ratelimit_total",
        "openflare_upstream_errors_total",
        "openflare_upstream_duration_seconds",
        "openflare_upstream_connections",
        "openflare_upstream_connections_limit",
        "openflare_stage_duration_seconds",
        "openflare_config_reloads_total",
        "openflare_config_info",
        "openflare_build_info",
    }
    assert expected <= set(after), expected - set(after)
    assert promtool_check_metrics(text) == ""


def test_openmetrics_scrape_carries_trace_exemplars(proxy_factory: ProxyFactory) -> None:
    with otlp_receiver() as receiver:
        proxy = proxy_factory(traced(receiver))
        with client_for(proxy) as client:
            response = client.get("/api/items", headers={"X-Request-ID": "exemplar-1"})
        assert response.status_code == 200
        line = proxy.access_log("exemplar-1")
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])

        plain = scrape(proxy)
        assert plain.headers["content-type"].startswith("text/plain;")
        assert "trace_id" not in plain.text
        assert promtool_check_metrics(plain.text) == ""

        om = scrape(proxy, OPENMETRICS_ACCEPT)
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
        assert check_openmetrics(om.text) > 0
        exemplar = f'trace_id="{line["trace_id"]}"'
        request_buckets = [
            row
            for row in om.text.splitlines()
            if row.startswith("openflare_request_duration_seconds_bucket") and exemplar in row
        ]
        upstream_buckets = [
            row
            for row in om.text.splitlines()
            if row.startswith("openflare_upstream_duration_seconds_bucket") and exemplar in row
        ]
        assert request_buckets and upstream_buckets, om.text[:3000]
        assert f'span_id="{line["span_id"]}"' in request_buckets[0]


def test_tracing_off_adds_nothing(local_stack: Stack) -> None:
    """The session proxy runs the test config, where tracing is off: no trace fields, the
    client's own traceparent reaches the origin untouched, no exemplars."""
    given = f"00-{GIVEN_TRACE}-{GIVEN_PARENT}-01"
    with local_stack.client() as client:
        response = client.get(
            "/debug/echo", headers={"traceparent": given, "X-Request-ID": f"off-{uid()}"}
        )
    received = [v for k, v in response.json()["headers"] if k.lower() == "traceparent"]
    assert received == [given]
    assert local_stack.proxy is not None
    line = local_stack.proxy.access_log(response.headers["x-request-id"])
    assert "trace_id" not in line and "span_id" not in line
    om = httpx.get(
        local_stack.admin_url + "/metrics", headers={"Accept": OPENMETRICS_ACCEPT}, timeout=10
    ).text
    assert check_openmetrics(om) == 0


# --------------------------------------------------------------------------------------------
# traces


def server_span(receiver: OtlpReceiver, request_id: str, timeout: float = 10.0) -> ReceivedSpan:
    spans = receiver.wait_for(
        lambda spans: any(
            s.kind == "SERVER" and s.attributes.get("openflare.request_id") == request_id
            for s in spans
        ),
        timeout,
        f"the server span of {request_id}",
    )
    return next(
        s
        for s in spans
        if s.kind == "SERVER" and s.attributes.get("openflare.request_id") == request_id
    )


def trace_of(
    receiver: OtlpReceiver, request_id: str, names: set[str]
) -> tuple[ReceivedSpan, dict[str, ReceivedSpan], list[ReceivedSpan]]:
    """(server span, its children by name, every span of the trace) once `names` arrived."""
    root = server_span(receiver, request_id)
    spans = receiver.wait_trace(root.trace_id, names | {root.name})
    time.sleep(0.3)  # let stragglers of the same batch land
    spans = receiver.trace(root.trace_id)
    children = {s.name: s for s in spans if s.parent_span_id == root.span_id}
    return root, children, spans


def stage_overrides(origin_url: str, dead_port: int) -> dict[str, Any]:
    """The test config plus an upstream nobody listens on, behind the route /dead/."""
    config = load_test_config()
    upstreams = copy.deepcopy(config["upstreams"])
    upstreams[0]["base_url"] = origin_url
    upstreams.append(
        {"name": "dead", "base_url": f"http://127.0.0.1:{dead_port}", "connect_timeout_ms": 500}
    )
    routes = [
        {"id": "dead", "host": "127.0.0.1", "path_prefix": "/dead/", "upstream": "dead"},
        *config["routing"]["routes"],
    ]
    return {"upstreams": upstreams, "routing": {"routes": routes}}


def test_span_trees_for_hit_miss_waf_block_and_429(
    proxy_factory: ProxyFactory, stack: Stack
) -> None:
    with otlp_receiver() as receiver:
        proxy = proxy_factory(traced(receiver))
        u = uid()
        cacheable = {"u": u, "cc": "public, max-age=60"}
        with client_for(proxy) as client:
            store = client.get(
                "/cache/custom", params=cacheable, headers={"X-Request-ID": "t-store"}
            )
            hit = client.get("/cache/custom", params=cacheable, headers={"X-Request-ID": "t-hit"})
            miss = client.get(
                "/cache/custom",
                params={"u": u, "cc": "private, max-age=60"},
                headers={"X-Request-ID": "t-miss"},
            )
            block = client.get("/", params={"q": SQLI}, headers={"X-Request-ID": "t-waf"})
            limited = [
                client.get(f"/path-test/rl-burst/{u}", headers={"X-Request-ID": f"t-rl-{i}"})
                for i in range(11)
            ]
        assert store.headers["x-edge-cache"] == "STORE"
        assert hit.headers["x-edge-cache"] == "HIT"
        assert miss.headers["x-edge-cache"] == "MISS"
        assert block.status_code == 403
        assert [r.status_code for r in limited] == [200] * 10 + [429]

        # MISS that was stored: the origin fetch is the cache stage's own, so it nests there
        root, children, spans = trace_of(
            receiver, "t-store", {"waf", "ratelimit", "cache", "GET", "cache.lookup", "cache.store"}
        )
        assert root.kind == "SERVER" and root.name == "GET /*" and root.parent_span_id == ""
        assert root.attributes["http.request.method"] == "GET"
        assert root.attributes["http.route"] == "/*"
        assert root.attributes["url.path"] == "/cache/custom"
        assert root.attributes["http.response.status_code"] == 200
        assert root.attributes["openflare.route"] == "local"
        assert root.attributes["openflare.cache.status"] == "STORE"
        assert root.attributes["openflare.ratelimit.decision"] == "allow"
        assert {"waf", "ratelimit", "cache"} <= set(children)
        assert all(children[n].kind == "INTERNAL" for n in ("waf", "ratelimit", "cache"))
        assert children["waf"].attributes["openflare.waf.action"] == "pass"
        assert children["ratelimit"].attributes == {
            "openflare.ratelimit.decision": "allow",
            "openflare.ratelimit.rule_id": "global",
        }
        assert children["cache"].attributes["openflare.cache.status"] == "STORE"
        upstream = next(s for s in spans if s.kind == "CLIENT")
        assert upstream.parent_span_id == children["cache"].span_id
        assert upstream.attributes["openflare.upstream"] == "origin"
        assert upstream.attributes["openflare.request_id"] == "t-store"
        assert upstream.attributes["http.response.status_code"] == 200
        assert upstream.attributes["url.full"].startswith(stack.origin_url + "/cache/custom")
        # stages are siblings, each with its own time, in pipeline order
        assert children["waf"].end_ns <= children["ratelimit"].start_ns
        assert children["ratelimit"].end_ns <= children["cache"].start_ns
        assert root.start_ns <= children["waf"].start_ns and children["cache"].end_ns <= root.end_ns
        assert root.resource["service.name"] == "openflare"
        # the cache's own steps: lookup (nothing there), the fetch, then the store write
        lookup, stored = (
            next(s for s in spans if s.name == n) for n in ("cache.lookup", "cache.store")
        )
        assert lookup.parent_span_id == stored.parent_span_id == children["cache"].span_id
        assert lookup.end_ns <= upstream.start_ns and upstream.end_ns <= stored.start_ns
        assert lookup.attributes["openflare.cache.lookup.result"] == "absent"
        assert stored.attributes["openflare.cache.store.decision"] == "stored"
        assert stored.attributes["openflare.cache.store.reason"] == "max-age"
        key_hash = lookup.attributes["openflare.cache.key_hash"]
        assert stored.attributes["openflare.cache.key_hash"] == key_hash and len(key_hash) == 16

        # HIT: answered by the cache, no upstream call
        root, children, spans = trace_of(
            receiver, "t-hit", {"waf", "ratelimit", "cache", "cache.lookup"}
        )
        assert children["cache"].attributes["openflare.cache.status"] == "HIT"
        (lookup,) = (s for s in spans if s.name == "cache.lookup")
        assert lookup.attributes["openflare.cache.lookup.result"] == "found"
        assert lookup.attributes["openflare.cache.key_hash"] == key_hash
        assert not [s for s in spans if s.name == "cache.store"]
        assert root.attributes["openflare.cache.status"] == "HIT"
        assert not [s for s in spans if s.kind == "CLIENT"]

        # MISS, not storable: streamed to the client that fetched it
        root, children, spans = trace_of(receiver, "t-miss", {"cache", "GET", "cache.store"})
        assert root.attributes["openflare.cache.status"] == "MISS"
        (declined,) = (s for s in spans if s.name == "cache.store")
        assert declined.attributes["openflare.cache.store.decision"] == "not-stored"
        assert declined.attributes["openflare.cache.store.reason"] == "private"
        assert next(s for s in spans if s.kind == "CLIENT").parent_span_id == (
            children["cache"].span_id
        )

        # WAF block: the WAF span says which rule and what it did; nothing after it ran
        root, children, spans = trace_of(receiver, "t-waf", {"waf"})
        assert root.attributes["http.response.status_code"] == 403
        assert root.attributes["openflare.waf.action"] == "block"
        assert "sqli-tautology" in root.attributes["openflare.waf.rule_ids"]
        assert children["waf"].attributes["openflare.waf.action"] == "block"
        assert "sqli-tautology" in children["waf"].attributes["openflare.waf.rule_ids"]
        assert {s.name for s in spans} == {root.name, "waf"}
        assert root.status == "UNSET"  # a 4xx is the client's problem, not the server's
        event = proxy.wait_log(event="waf", request_id="t-waf")
        assert event["trace_id"] == root.trace_id and event["span_id"] == children["waf"].span_id

        # 429
        root, children, spans = trace_of(receiver, "t-rl-10", {"waf", "ratelimit"})
        assert root.attributes["http.response.status_code"] == 429
        assert root.attributes["openflare.ratelimit.decision"] == "deny"
        assert children["ratelimit"].attributes == {
            "openflare.ratelimit.decision": "deny",
            "openflare.ratelimit.rule_id": "rl-burst",
        }
        assert not {"cache"} & set(children) and not [s for s in spans if s.kind == "CLIENT"]

        # access lines point at the server spans
        for request_id in ("t-store", "t-hit", "t-miss", "t-waf", "t-rl-10"):
            line = proxy.access_log(request_id)
            root = server_span(receiver, request_id)
            assert (line["trace_id"], line["span_id"]) == (root.trace_id, root.span_id)


def test_incoming_traceparent_is_continued_and_sent_upstream(
    proxy_factory: ProxyFactory, stack: Stack
) -> None:
    with otlp_receiver() as receiver:
        proxy = proxy_factory(
            {**traced(receiver), **stage_overrides(stack.origin_url, closed_port())}
        )
        given = f"00-{GIVEN_TRACE}-{GIVEN_PARENT}-01"
        with client_for(proxy) as client:
            echo = client.get(
                "/debug/echo", headers={"traceparent": given, "X-Request-ID": "t-continue"}
            )
            fresh = client.get("/debug/echo", headers={"X-Request-ID": "t-fresh"})
            dead = client.get("/dead/x", headers={"X-Request-ID": "t-dead"})
        assert echo.status_code == fresh.status_code == 200 and dead.status_code == 502

        root, children, spans = trace_of(receiver, "t-continue", {"cache", "GET"})
        assert root.trace_id == GIVEN_TRACE and root.parent_span_id == GIVEN_PARENT
        upstream = next(s for s in spans if s.kind == "CLIENT")
        assert upstream.parent_span_id == root.span_id  # BYPASS: forwarded after the stages
        assert children["cache"].attributes["openflare.cache.status"] == "BYPASS"
        assert children["cache"].end_ns <= upstream.start_ns
        sent = [v for k, v in echo.json()["headers"] if k.lower() == "traceparent"]
        assert sent == [f"00-{GIVEN_TRACE}-{upstream.span_id}-01"]

        root, _, spans = trace_of(receiver, "t-fresh", {"GET"})
        upstream = next(s for s in spans if s.kind == "CLIENT")
        sent = [v for k, v in fresh.json()["headers"] if k.lower() == "traceparent"]
        assert len(sent) == 1
        version, trace_id, parent_id, flags = sent[0].split("-")
        assert (version, trace_id, parent_id) == ("00", root.trace_id, upstream.span_id)
        assert int(flags, 16) & 1  # sampled (the SDK may add the W3C "random" flag, 0x02)
        assert root.parent_span_id == ""

        # an upstream that cannot be reached: both spans say so
        root, _, spans = trace_of(receiver, "t-dead", {"GET"})
        assert root.status == "ERROR" and root.attributes["error.type"] == "502"
        assert root.attributes["openflare.error"] == "upstream_connect"
        upstream = next(s for s in spans if s.kind == "CLIENT")
        assert upstream.status == "ERROR" and upstream.attributes["openflare.upstream"] == "dead"
        assert "exception" in upstream.events


def timed_requests(proxy: ProxyProcess, n: int) -> list[float]:
    durations = []
    with client_for(proxy) as client:
        for i in range(n):
            started = time.perf_counter()
            response = client.get("/api/items", headers={"X-Request-ID": f"lat-{i}"})
            durations.append(time.perf_counter() - started)
            assert response.status_code == 200
    return durations


def test_unreachable_collector_never_slows_or_fails_requests(
    proxy_factory: ProxyFactory, stack: Stack
) -> None:
    """A collector that refuses connections, and one that accepts but never answers: every
    request succeeds and none waits for an export."""
    import socket

    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(1)  # accepts (the kernel does) and never reads or answers
    try:
        baseline = proxy_factory({})
        refused = proxy_factory(
            {
                "tracing": {
                    "enabled": True,
                    "endpoint": f"http://127.0.0.1:{closed_port()}",
                    "schedule_delay_ms": 50,
                    "max_queue_size": 64,
                    "max_export_batch_size": 16,
                }
            }
        )
        hanging = proxy_factory(
            {
                "tracing": {
                    "enabled": True,
                    "endpoint": f"http://127.0.0.1:{blackhole.getsockname()[1]}",
                    "schedule_delay_ms": 50,
                    "export_timeout_ms": 30_000,
                    "max_queue_size": 64,
                    "max_export_batch_size": 16,
                }
            }
        )
        results = {}
        for name, proxy in (("off", baseline), ("refused", refused), ("hanging", hanging)):
            results[name] = timed_requests(proxy, 150)  # each one answered 200
        worst = {name: max(values) for name, values in results.items()}
        for name in ("refused", "hanging"):
            # not a speed check (benchmarks measure speed): a request that waited for the
            # hanging export would take its whole 30 s export timeout; the queue fills and
            # drops instead, so none comes near a third of it
            assert worst[name] < 10.0, worst
        deadline = time.monotonic() + 15.0  # the exporter's retries give up, then count
        while True:
            errors = Metrics.parse(scrape(refused).text).value(
                "openflare_tracing_exported_spans_total", result="error"
            )
            if errors > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert errors > 0  # the failures are counted...
        for proxy in (refused, hanging):  # ...and logged at most once a minute each
            exporter_lines = [
                r
                for r in proxy.log_records()
                if r.get("event") == "library" and "opentelemetry" in str(r.get("logger"))
            ]
            assert len(exporter_lines) <= 6, exporter_lines
        # shutting down does not wait for the collector beyond the flush bound
        started = time.monotonic()
        assert hanging.stop() == 0
        assert time.monotonic() - started < 8.0
    finally:
        blackhole.close()


def test_tracing_from_otel_environment(stack: Stack, tmp_path: Path) -> None:
    """Off in the config file, on through the standard variables (as the OpenTelemetry
    Operator injects them); the service name and resource attributes come from there too."""
    with otlp_receiver() as receiver:
        proxy = ProxyProcess(
            tmp_path, origin_url=stack.origin_url, token=uuid.uuid4().hex, name="proxy-env"
        )
        proxy.env.update(
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=e2e,authorization=Bearer%20abc",
                "OTEL_SERVICE_NAME": "edge-e2e",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e,k8s.pod.name=pod-1",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "1.0",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
        )
        try:
            proxy.start_and_wait()
            with client_for(proxy) as client:
                assert (
                    client.get("/api/items", headers={"X-Request-ID": "t-env"}).status_code == 200
                )
            root = server_span(receiver, "t-env")
            assert root.resource["service.name"] == "edge-e2e"
            assert root.resource["deployment.environment"] == "e2e"
            assert root.resource["k8s.pod.name"] == "pod-1"
            assert receiver.headers[-1]["x-tenant"] == "e2e"
            assert receiver.headers[-1]["authorization"] == "Bearer abc"
            started = proxy.wait_log(event="tracing")
            assert started["service_name"] == "edge-e2e"

            # a sampler of 0 keeps nothing new, but a sampled parent still wins
        finally:
            proxy.stop()


def test_reload_turns_tracing_on_and_off(proxy_factory: ProxyFactory) -> None:
    with otlp_receiver() as receiver:
        proxy = proxy_factory({})
        with client_for(proxy) as client:
            client.get("/api/items", headers={"X-Request-ID": "t-before"})
            config = dict(proxy.config, **traced(receiver))
            proxy.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
            with httpx.Client(
                base_url=proxy.admin_url, headers={"Authorization": f"Bearer {proxy.token}"}
            ) as admin:
                assert admin.post("/admin/config/reload").json()["result"] == "ok"
                client.get("/api/items", headers={"X-Request-ID": "t-on"})
                server_span(receiver, "t-on")
                proxy.config_path.write_text(yaml.safe_dump(proxy.config), encoding="utf-8")
                assert admin.post("/admin/config/reload").json()["result"] == "ok"
            client.get("/api/items", headers={"X-Request-ID": "t-off"})
        assert "trace_id" in proxy.access_log("t-on")
        assert "trace_id" not in proxy.access_log("t-off")
        assert "trace_id" not in proxy.access_log("t-before")
        time.sleep(0.5)
        ids = {s.attributes.get("openflare.request_id") for s in receiver.snapshot()}
        assert "t-on" in ids and not {"t-before", "t-off"} & ids


# --------------------------------------------------------------------------------------------
# dashboards and alerts against a real Prometheus

MACROS = {"__rate_interval": "5m", "__range": "5m", "__interval": "15s"}
LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$", re.S)


def expand(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for `$name` and `${name}` (regex-escaped values)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in MACROS:
            return MACROS[name]
        if name not in values:
            raise AssertionError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def load_dashboards() -> dict[str, dict[str, Any]]:
    paths = sorted(DASHBOARDS_DIR.glob("*.json"))
    assert len(paths) >= 3, paths
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in paths}


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"{panel['title']} [{target['refId']}]", target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation["expr"]


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def finite(samples: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in samples)


def waf_file_with_shadow_route(tmp_path: Path) -> Path:
    """The shipped WAF rules with the `static` route in shadow mode (→ would_block)."""
    rules = yaml.safe_load((CONFIGS_DIR / "rules.waf.yaml").read_text(encoding="utf-8"))
    rules["routes"] = [*rules.get("routes", []), {"id": "static", "mode": "shadow"}]
    path = tmp_path / "rules.waf.shadow-static.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


def drive_traffic(proxy: ProxyProcess, stack: Stack) -> None:
    """Traffic of every kind, sized so that every alert condition holds (5xx above 5%, an
    upstream failing, p99 above 1 s, hit ratio below 30%, blocks above 10%...)."""
    admin = httpx.Client(
        base_url=proxy.admin_url, headers={"Authorization": f"Bearer {proxy.token}"}, timeout=10
    )
    with client_for(proxy) as client, ThreadPoolExecutor(16) as pool, admin:
        u = uid()

        def get(path: str, **kw: Any) -> httpx.Response:
            return client.get(path, **kw)

        # cache: 150 stored misses (with cache.max_entries 50: evictions), hits, a bypass
        list(
            pool.map(
                lambda i: get("/cache/custom", params={"u": f"{u}-{i}", "cc": "max-age=600"}),
                range(150),
            )
        )
        hits = [
            get("/cache/custom", params={"u": f"{u}-149", "cc": "max-age=600"}) for _ in range(15)
        ]
        assert {r.headers["x-edge-cache"] for r in hits} == {"HIT"}
        assert get("/api/items").headers["x-edge-cache"] == "BYPASS"
        assert (
            get("/cache/custom", params={"u": u, "cc": "private"}).headers["x-edge-cache"] == "MISS"
        )
        # collapsed requests
        collapse = {"u": f"{u}-c", "cc": "max-age=600", "delay_ms": "400"}
        statuses = list(
            pool.map(
                lambda _: get("/cache/custom", params=collapse).headers["x-edge-cache"], range(8)
            )
        )
        assert statuses.count("STORE") == 1, statuses
        # stale-while-revalidate
        swr = {"u": f"{u}-s", "cc": "max-age=1, stale-while-revalidate=60"}
        get("/cache/custom", params=swr)
        time.sleep(1.3)
        assert get("/cache/custom", params=swr).headers["x-edge-cache"] == "STALE"
        # purge and an invalidation by an unsafe request
        purged = admin.post(
            "/admin/cache/purge",
            json={"url": f"http://127.0.0.1:{proxy.port}/cache/custom?u={u}-149&cc=max-age%3D600"},
        )
        assert purged.status_code == 200, purged.text
        client.delete("/cache/custom", params={"u": f"{u}-148", "cc": "max-age=600"})
        # WAF: blocks, and would-blocks on the shadow route
        blocks = list(
            pool.map(lambda i: get("/", params={"q": SQLI, "n": str(i)}).status_code, range(100))
        )
        assert set(blocks) == {403}
        shadow = [get(f"/static/{i}.css", params={"q": SQLI}).status_code for i in range(5)]
        assert 403 not in shadow
        # rate limiting: 10 pass, then 429
        limited = [get(f"/path-test/rl-burst/{u}").status_code for _ in range(14)]
        assert limited.count(429) == 4
        get(f"/path-test/rl-shadow/{u}")
        get(f"/path-test/rl-shadow/{u}")  # would_block
        # origin 5xx, an upstream that refuses connections, panics
        list(pool.map(lambda _: get("/error/503"), range(40)))
        # (502 connect refused; on a loaded machine a connect can also time out: 504)
        assert set(pool.map(lambda _: get("/dead/x").status_code, range(40))) <= {502, 504}
        assert {get("/__openflare/fault/raise").status_code for _ in range(5)} == {500}
        # refusals before routing
        assert get("/a%2Fb").status_code == 400
        assert get("/", headers={"Host": "unknown.example.test"}).status_code == 404
        # slow responses: p99 above 1 s
        slow = list(pool.map(lambda _: get("/slow", params={"delay_ms": "1100"}), range(20)))
        assert {r.status_code for r in slow} == {200}
        list(pool.map(lambda _: get("/"), range(20)))

        # config reloads: one refused, one applied
        good = proxy.config_path.read_text(encoding="utf-8")
        proxy.config_path.write_text("upstreams: []\n", encoding="utf-8")
        assert admin.post("/admin/config/reload").status_code == 422
        changed = yaml.safe_load(good)
        changed["logging"]["level"] = "warning"
        proxy.config_path.write_text(yaml.safe_dump(changed, sort_keys=False), encoding="utf-8")
        assert admin.post("/admin/config/reload").json()["result"] == "ok"


def test_prometheus_evaluates_every_panel_and_alert(
    proxy_factory: ProxyFactory, stack: Stack, tmp_path: Path
) -> None:
    dashboards = load_dashboards()
    rules = alert_rules()
    with otlp_receiver() as receiver:
        overrides = {
            **traced(receiver),
            **stage_overrides(stack.origin_url, closed_port()),
            "cache": {"max_entries": 50},
            "rule_files": {"waf": str(waf_file_with_shadow_route(tmp_path))},
        }
        proxy = proxy_factory(overrides)
        dead_target = f"127.0.0.1:{closed_port()}"  # a scrape target that is down
        prometheus = PrometheusServer(
            tmp_path / "prometheus",
            [
                Target(f"127.0.0.1:{proxy.admin_port}", {"namespace": NAMESPACE}),
                Target(dead_target, {"namespace": NAMESPACE}),
            ],
            rule_files=[ALERT_RULES],
        )
        try:
            prometheus.start_and_wait()
            target = f"127.0.0.1:{proxy.admin_port}"
            prometheus.wait_until(
                lambda: prometheus.query(f'up{{instance="{target}"}} == 1'), 20, "the first scrape"
            )
            # warm-up: every series exists before the traffic that counts (rate() needs two
            # samples, and the first appearance of a counter is its baseline)
            with client_for(proxy) as client:
                client.get("/", params={"q": SQLI})
                client.get("/error/503")
                client.get("/dead/x")
                client.get("/static/w.css", params={"q": SQLI})
            time.sleep(2.5)
            started = time.time()
            drive_traffic(proxy, stack)
            # the last scrape and rule evaluation see all of it
            prometheus.wait_until(
                lambda: prometheus.query(
                    f'openflare_config_reloads_total{{instance="{target}", result="ok"}} > 0'
                ),
                20,
                "a scrape after the traffic",
            )
            time.sleep(3)

            health = {t["labels"]["instance"]: t for t in prometheus.targets()}
            assert health[target]["health"] == "up", health[target]
            assert health[dead_target]["health"] == "down"

            failures: list[str] = []
            checked = 0
            for name, dashboard in dashboards.items():
                variables = {
                    var["name"]: ".*"
                    for var in dashboard["templating"]["list"]
                    if var["type"] == "query"
                }
                # each variable's query lists something (what Grafana would offer)
                for var in dashboard["templating"]["list"]:
                    if var["type"] != "query":
                        continue
                    match = LABEL_VALUES.match(var["query"]["query"])
                    assert match, var["query"]
                    series, label = match.groups()
                    values = prometheus.label_values(label, expand(series, variables))
                    if not values:
                        failures.append(f"{name}: variable {var['name']} lists no value")
                    checked += 1
                namespace_only = {
                    **variables,
                    "namespace": NAMESPACE,
                    # as Grafana writes a picked value into a PromQL string: regex-escaped, then
                    # the backslashes escaped for the string literal
                    "instance": re.escape(target).replace("\\", "\\\\"),
                }
                for title, expr in panel_queries(dashboard):
                    for selection in (variables, namespace_only):
                        query = expand(expr, selection)
                        try:
                            result = prometheus.query(query)
                        except AssertionError as exc:
                            failures.append(f"{name}: {title}: does not evaluate: {exc}")
                            continue
                        checked += 1
                        if not result:
                            failures.append(f"{name}: {title}: no data for {query}")
                        elif not finite(result):
                            failures.append(f"{name}: {title}: only NaN/Inf for {query}: {result}")
            for rule in rules:
                result = prometheus.query(rule["expr"])
                checked += 1
                if not result:
                    failures.append(f"alert {rule['alert']}: no data for {rule['expr']}")
            assert not failures, "\n".join(failures)
            assert checked > 100

            # Prometheus itself loaded the rules and has every alert pending or firing
            assert all(r["health"] == "ok" for r in prometheus.rules()), prometheus.rules()
            wanted = {rule["alert"] for rule in rules}
            active = prometheus.wait_until(
                lambda: (
                    wanted <= {a["labels"]["alertname"] for a in prometheus.alerts()}
                    and prometheus.alerts()
                ),
                15,
                f"alerts {sorted(wanted)}",
            )
            states = {a["labels"]["alertname"]: a["state"] for a in active}
            assert set(states.values()) <= {"pending", "firing"}
            down = [a for a in active if a["labels"]["alertname"] == "OpenFlareDown"]
            assert {a["labels"]["instance"] for a in down} == {dead_target}
            upstreams = {
                a["labels"]["upstream"]
                for a in active
                if a["labels"]["alertname"] == "OpenFlareUpstreamErrors"
            }
            assert upstreams == {"dead"}

            # exemplars: Prometheus stored trace ids, and they are traces the collector got
            exemplars = prometheus.exemplars(
                "openflare_request_duration_seconds_bucket", started - 5, time.time() + 5
            )
            trace_ids = {
                e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]
            }
            assert trace_ids, exemplars
            received = receiver.wait_for(
                lambda spans: bool(trace_ids & {s.trace_id for s in spans}), 10, "exemplar traces"
            )
            assert trace_ids & {s.trace_id for s in received}
        finally:
            prometheus.stop()
