"""The lock-free metric families (observability/metrics.py `LoopCounter`, `LoopHistogram`)
expose exactly what prometheus-client's own `Counter` and `Histogram` expose for the same
writes: both exposition formats compared byte for byte, exemplars included."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from openflare.observability.metrics import (
    LATENCY_BUCKETS,
    LOCK_FREE,
    LoopCounter,
    LoopHistogram,
    LoopValue,
    Metrics,
)

# every bound exactly, either side of each, below the first, past the last, zero, negative, inf
AMOUNTS = [
    *LATENCY_BUCKETS,
    *(b * 0.999 for b in LATENCY_BUCKETS),
    *(b * 1.001 for b in LATENCY_BUCKETS),
    0.0,
    -0.25,
    1e-9,
    31.0,
    1e6,
    math.inf,
]


def both(kind: str, **kwargs: Any) -> tuple[CollectorRegistry, Any, CollectorRegistry, Any]:
    stock_registry, loop_registry = CollectorRegistry(), CollectorRegistry()
    stock_class, loop_class = (
        (Counter, LoopCounter) if kind == "counter" else (Histogram, LoopHistogram)
    )
    stock = stock_class(registry=stock_registry, **kwargs)
    loop = loop_class(registry=loop_registry, **kwargs)
    return stock_registry, stock, loop_registry, loop


def assert_same_exposition(a: CollectorRegistry, b: CollectorRegistry) -> None:
    assert generate_latest(a) == generate_latest(b)
    assert generate_openmetrics(a) == generate_openmetrics(b)  # type: ignore[no-untyped-call]


def test_the_in_process_value_is_the_lock_free_one() -> None:
    assert LOCK_FREE  # no PROMETHEUS_MULTIPROC_DIR in the test environment
    child = LoopHistogram("h", "h", ("route",), registry=None).labels("r")
    assert isinstance(child._sum, LoopValue)
    assert all(isinstance(bucket, LoopValue) for bucket in child._buckets)
    assert isinstance(LoopCounter("c", "c", registry=None)._value, LoopValue)


def test_histogram_buckets_sum_and_count_match_the_library() -> None:
    stock_registry, stock, loop_registry, loop = both(
        "histogram",
        name="d_seconds",
        documentation="d",
        labelnames=("route",),
        buckets=LATENCY_BUCKETS,
    )
    for index, amount in enumerate(AMOUNTS):
        route = ("a", "b")[index % 2]
        stock.labels(route).observe(amount)
        loop.labels(route).observe(amount)
    assert_same_exposition(stock_registry, loop_registry)


def test_histogram_exemplars_and_nan_take_the_library_path() -> None:
    stock_registry, stock, loop_registry, loop = both(
        "histogram",
        name="e_seconds",
        documentation="e",
        labelnames=("stage",),
        buckets=(0.001, 0.01, 0.1),
    )
    exemplar = {"trace_id": "0" * 31 + "1", "span_id": "0" * 15 + "2"}
    for amount in (0.0005, 0.05, 2.0):
        stock.labels("waf").observe(amount, exemplar)
        loop.labels("waf").observe(amount, exemplar)
    # exemplars carry a wall-clock timestamp: compare them without it
    stock_samples = [s for f in stock_registry.collect() for s in f.samples]
    loop_samples = [s for f in loop_registry.collect() for s in f.samples]
    for s, lo in zip(stock_samples, loop_samples, strict=True):
        assert (s.name, s.labels, s.value) == (lo.name, lo.labels, lo.value)
        assert (s.exemplar is None) == (lo.exemplar is None)
        if s.exemplar is not None and lo.exemplar is not None:
            assert (s.exemplar.labels, s.exemplar.value) == (lo.exemplar.labels, lo.exemplar.value)
    # NaN: the library's scan puts it in no bucket and the sum becomes NaN; so does ours
    stock.labels("nan").observe(math.nan)
    loop.labels("nan").observe(math.nan)
    assert (
        generate_latest(stock_registry).split(b"e_seconds_bucket")[-4:]
        == generate_latest(loop_registry).split(b"e_seconds_bucket")[-4:]
    )


def test_counters_match_the_library_and_keep_its_errors() -> None:
    stock_registry, stock, loop_registry, loop = both(
        "counter", name="c_total", documentation="c", labelnames=("route", "code")
    )
    for index in range(50):
        for family in (stock, loop):
            family.labels("r", str(200 + index % 3)).inc()
            family.labels("r", "bytes").inc(1024.5)
    assert_same_exposition(stock_registry, loop_registry)
    with pytest.raises(ValueError, match="non-negative"):
        loop.labels("r", "200").inc(-1)
    with pytest.raises(ValueError, match="missing label values"):
        loop.inc()  # the parent of a labelled family has no value
    unlabelled = LoopCounter("u_total", "u", registry=None)
    unlabelled.inc(3)
    assert unlabelled._value.get() == 3


def test_hot_path_families_are_lock_free_and_the_exporter_family_is_not() -> None:
    metrics = Metrics()
    for family in (
        metrics.requests,
        metrics.response_bytes,
        metrics.rejections,
        metrics.waf_decisions,
        metrics.ratelimit_decisions,
        metrics.cache_operations,
        metrics.upstream_errors,
    ):
        assert isinstance(family, LoopCounter)
    for histogram in (metrics.request_duration, metrics.stage_duration, metrics.upstream_duration):
        assert isinstance(histogram, LoopHistogram)
    # written by the span exporter's thread: keeps the library's locked value
    assert not isinstance(metrics.tracing_exported, LoopCounter)
