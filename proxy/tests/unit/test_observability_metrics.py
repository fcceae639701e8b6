"""Metric families: bounded label values, the access-log stage's counters, exposition
negotiation (text vs OpenMetrics with exemplars), the upstream pool gauges."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from openflare.config.loader import load_bundle
from openflare.config.models import UpstreamConfig
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.observability.metrics import (
    Metrics,
    cache_status_label,
    method_label,
    status_class,
    status_code,
)
from openflare.pipeline import ratelimit, waf
from openflare.pipeline.access_log import AccessLogStage
from openflare.pipeline.base import Exchange
from openflare.routing import Route
from openflare.upstream.pool import UpstreamPools

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.mark.parametrize(
    ("status", "klass", "code"),
    [
        (200, "2xx", "200"),
        (404, "4xx", "404"),
        (599, "5xx", "599"),
        (99, "other", "other"),
        (600, "other", "other"),
        (101, "1xx", "101"),
    ],
)
def test_status_labels(status: int, klass: str, code: str) -> None:
    assert (status_class(status), status_code(status)) == (klass, code)


@pytest.mark.parametrize(
    ("value", "label"),
    [("GET", "GET"), ("PURGE", "OTHER"), ("get", "OTHER"), ("X" * 100, "OTHER")],
)
def test_method_label(value: str, label: str) -> None:
    assert method_label(value) == label


@pytest.mark.parametrize(
    ("value", "label"),
    [("HIT", "HIT"), ("STALE", "STALE"), ("BYPASS", "BYPASS"), ("whatever", "OTHER")],
)
def test_cache_status_label(value: str, label: str) -> None:
    assert cache_status_label(value) == label


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def run_stage(metrics: Metrics, path: str, status: int, cache_status: str = "") -> None:
    stage = AccessLogStage(LogWriter(io.BytesIO()), metrics, enabled=False)
    exchange = Exchange(make_mocked_request("GET", path), 0.0, False)

    async def answer(exchange: Exchange) -> web.StreamResponse:
        exchange.route = Route("static", "origin", "/static/")
        exchange.cache_status = cache_status
        return web.Response(status=status, body=b"12345")

    await stage(exchange, answer)


async def test_access_log_counts_by_route_code_and_cache_status() -> None:
    metrics = Metrics()
    for i in range(5):
        await run_stage(metrics, f"/static/{i}", 200, "HIT")
    await run_stage(metrics, "/static/x", 503, "ERROR")
    await run_stage(metrics, "/static/y", 200, "made-up")
    labels = {"route": "static", "method": "GET"}
    assert (
        sample(metrics, "openflare_requests_total", **labels, status_class="2xx", code="200") == 6
    )
    assert (
        sample(metrics, "openflare_requests_total", **labels, status_class="5xx", code="503") == 1
    )
    assert (
        sample(metrics, "openflare_cache_requests_total", route="static", cache_status="HIT") == 5
    )
    assert (
        sample(metrics, "openflare_cache_requests_total", route="static", cache_status="OTHER") == 1
    )
    assert sample(metrics, "openflare_response_bytes_total", route="static") == 35
    assert sample(metrics, "openflare_request_duration_seconds_count", route="static") == 7
    assert sample(metrics, "openflare_in_flight_requests") == 0
    # no path anywhere in the exposition
    text, _ = metrics.render()
    assert b"/static/" not in text


def test_reload_results_and_tracing_exports_exist_at_zero() -> None:
    metrics = Metrics()
    for result in ("ok", "unchanged", "error"):
        assert (
            metrics.registry.get_sample_value("openflare_config_reloads_total", {"result": result})
            == 0.0
        )
    for result in ("ok", "error"):
        assert (
            metrics.registry.get_sample_value(
                "openflare_tracing_exported_spans_total", {"result": result}
            )
            == 0.0
        )
    metrics.export_result("error", 12)
    assert sample(metrics, "openflare_tracing_exported_spans_total", result="error") == 12


def test_stale_serves_are_counted_with_the_operation() -> None:
    metrics = Metrics()
    metrics.cache_operation("stale")
    metrics.cache_operation("hit")
    metrics.cache_operation("stale")
    assert sample(metrics, "openflare_cache_stale_served_total") == 2
    assert sample(metrics, "openflare_cache_operations_total", operation="stale") == 2


class FakeSpanContext:
    def __init__(self, sampled: bool) -> None:
        self.trace_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736
        self.span_id = 0x00F067AA0BA902B7

        class Flags:
            pass

        self.trace_flags = Flags()
        self.trace_flags.sampled = sampled  # type: ignore[attr-defined]


class FakeSpan:
    def __init__(self, sampled: bool) -> None:
        self._context = FakeSpanContext(sampled)

    def get_span_context(self) -> Any:
        return self._context


def test_exposition_negotiation_and_exemplars() -> None:
    from openflare.observability.metrics import trace_exemplar

    metrics = Metrics()
    assert trace_exemplar(FakeSpan(False)) is None  # type: ignore[arg-type]
    exemplar = trace_exemplar(FakeSpan(True))  # type: ignore[arg-type]
    assert exemplar == {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
    }
    latency, _, _ = metrics.route_children("api")
    latency.observe(0.042, exemplar)
    metrics.upstream_latency("origin").observe(0.03, exemplar)

    text, content_type = metrics.render("")
    assert content_type.startswith("text/plain")
    assert b"trace_id" not in text
    text_again, _ = metrics.render("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert b"trace_id" not in text_again

    body, content_type = metrics.render(
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1"
        ";q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    buckets = [
        s for s in families["openflare_request_duration_seconds"].samples if s.exemplar is not None
    ]
    assert len(buckets) == 1
    assert buckets[0].labels["le"] == "0.05"
    assert buckets[0].exemplar.labels == exemplar  # type: ignore[union-attr]
    assert any(s.exemplar for s in families["openflare_upstream_duration_seconds"].samples)


async def test_upstream_pool_gauges_follow_the_current_pools() -> None:
    metrics = Metrics()
    pools = UpstreamPools(close_grace_seconds=0)
    metrics.upstream_pools.pools = pools.current
    pools.refresh(
        [
            UpstreamConfig(name="a", base_url="http://127.0.0.1:1", max_idle_conns=7),
            UpstreamConfig(name="b", base_url="http://127.0.0.1:2"),
        ]
    )
    assert sample(metrics, "openflare_upstream_connections", upstream="a", state="in_use") == 0
    assert sample(metrics, "openflare_upstream_connections", upstream="a", state="idle") == 0
    assert sample(metrics, "openflare_upstream_connections_limit", upstream="a") == 7
    assert sample(metrics, "openflare_upstream_connections_limit", upstream="b") == 1024
    pools.refresh([UpstreamConfig(name="b", base_url="http://127.0.0.1:2")])
    text, _ = metrics.render()
    assert b'upstream="a"' not in text  # a removed upstream's series go with it
    await pools.close()


def test_children_are_bound_once_per_family_and_key() -> None:
    metrics = Metrics()
    metrics.reject("limits", "uri_too_long")
    metrics.reject("limits", "uri_too_long")
    metrics.upstream_error("origin", "connect")
    assert metrics.stage_latency("waf") is metrics.stage_latency("waf")
    assert metrics.upstream_latency("origin") is metrics.upstream_latency("origin")
    assert metrics.request_child("r", "GET", 200) is metrics.request_child("r", "GET", 200)
    assert metrics.request_child("r", "BREW", 200) is metrics.request_child("r", "PURGE", 200)
    assert metrics.route_children("r") is metrics.route_children("r")
    labels = {"stage": "limits", "reason": "uri_too_long"}
    assert sample(metrics, "openflare_rejected_requests_total", **labels) == 2
    labels = {"upstream": "origin", "kind": "connect"}
    assert sample(metrics, "openflare_upstream_errors_total", **labels) == 1


WAF_RULES = """\
mode: enforce
body: {oversize: reject}
rules:
  - id: block-me
    match: {any: [{path_regex: '^/attack'}]}
    action: {type: block}
  - id: watch-me
    mode: shadow
    match: {any: [{path_regex: '^/probe'}]}
    action: {type: block}
  - id: let-me
    match: {any: [{path_regex: '^/health'}]}
    action: {type: allow}
"""
RATE_LIMITS = """\
rules:
  - {id: per-ip, key: ip, path_prefix: /, rate: 10, burst: 10}
  - {id: login, key: ip, path_prefix: /login, rate: 1, burst: 1}
"""


def series(metrics: Metrics, family: str, label: str) -> dict[tuple[str, str], float]:
    [found] = [f for f in metrics.registry.collect() if f.name == family]
    return {
        (s.labels["rule_id"], s.labels[label]): s.value
        for s in found.samples
        if s.name.endswith("_total")
    }


async def test_waf_and_ratelimit_rule_series_exist_at_zero_from_build(tmp_path: Path) -> None:
    """`rate()` needs a series before its first increment: the stages bind one per configured
    rule id and outcome when the runtime is built, and no others."""
    (tmp_path / "waf.yaml").write_text(WAF_RULES)
    (tmp_path / "limits.yaml").write_text(RATE_LIMITS)
    (tmp_path / "main.yaml").write_text(
        "upstreams: [{name: origin, base_url: 'http://127.0.0.1:8000'}]\n"
        "routing: {default_upstream: origin}\n"
        "rule_files: {waf: waf.yaml, rate_limit: limits.yaml}\n"
    )
    bundle = load_bundle(tmp_path / "main.yaml", {"OPENFLARE_ADMIN_TOKEN": "x" * 32})
    deps = Deps(log=LogWriter(io.BytesIO()))
    metrics = deps.metrics
    assert series(metrics, "openflare_waf_decisions", "action") == {}
    assert waf.build(bundle, deps) is not None
    assert ratelimit.build(bundle, deps) is not None
    enforce = {"block": 0.0, "would_block": 0.0, "log": 0.0}
    expected_waf = {
        **{("block-me", action): value for action, value in enforce.items()},
        ("watch-me", "would_block"): 0.0,  # a shadow rule never blocks
        ("watch-me", "log"): 0.0,
        ("let-me", "allow"): 0.0,
        **{(waf.OVERSIZE_RULE, action): value for action, value in enforce.items()},
    }
    assert series(metrics, "openflare_waf_decisions", "action") == expected_waf
    decisions = ("allow", "deny", "would_block", "error")
    assert series(metrics, "openflare_ratelimit", "decision") == {
        (rule_id, decision): 0.0 for rule_id in ("per-ip", "login") for decision in decisions
    }
    # the pre-bound child is the one a match counts on
    metrics.waf_decision("block-me", "block")
    assert series(metrics, "openflare_waf_decisions", "action")[("block-me", "block")] == 1.0
    # a rebuild (reload) binds nothing new for the same rules
    waf.build(bundle, deps)
    assert len(series(metrics, "openflare_waf_decisions", "action")) == len(expected_waf)
    await deps.close()
