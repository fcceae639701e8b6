"""Metric families: bounded label values, the access-log stage's counters, exposition
negotiation (text vs OpenMetrics with exemplars), the upstream pool gauges."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from openflare.config.models import UpstreamConfig
from openflare.observability.logging import LogWriter
from openflare.observability.metrics import (
    Metrics,
    cache_status_label,
    method_label,
    status_class,
    status_code,
)
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
