"""Prometheus metrics. One registry per process, created once and kept across reloads.

Label values come only from bounded sets: route ids, upstream names, rule ids, a fixed list of
methods (anything else is `OTHER`), status classes (`2xx`) and codes (100-599, anything else is
`other`), cache statuses (a fixed list, anything else `OTHER`), and fixed reason words. A raw
path, host or client value is never a label. Children are bound once per label tuple and
kept in one `ChildCache` per family, so the hot path pays a dict lookup, not a label
resolution.

`/metrics` answers in the Prometheus text format, or in OpenMetrics when the scraper asks for
it (`Accept: application/openmetrics-text`, which Prometheus sends): only OpenMetrics carries
the exemplars (trace ids) that the latency histograms get while tracing is on.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.values import MutexValue, ValueClass

from openflare import __version__
from openflare.observability.recent import RecentEvents

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from openflare.upstream.pool import UpstreamPool

# `*_created` series double the series count for no operational value.
disable_created_metrics()  # type: ignore[no-untyped-call]

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
STATUS_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")
# what the cache stage writes to `Exchange.cache_status` (docs/03-cache.md)
CACHE_STATUSES = frozenset(
    {"HIT", "MISS", "STORE", "BYPASS", "STALE", "REVALIDATED", "EXPIRED", "ERROR"}
)
RELOAD_RESULTS = ("ok", "unchanged", "error")
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


def status_class(status: int) -> str:
    index = status // 100
    return STATUS_CLASSES[index] if 0 < index < 6 else "other"


def status_code(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


def cache_status_label(status: str) -> str:
    return status if status in CACHE_STATUSES else "OTHER"


def trace_exemplar(span: Span) -> dict[str, str] | None:
    """The OpenMetrics exemplar labels for an observation made inside `span` (sampled only:
    an exemplar must point at a trace that exists)."""
    span_context = span.get_span_context()
    if not span_context.trace_flags.sampled:
        return None
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}


# prometheus-client's in-process value (`MutexValue`) takes a `threading.Lock` on every
# increment; with PROMETHEUS_MULTIPROC_DIR set it is an mmap-backed value instead, and then the
# families below keep the library's own value and code path.
LOCK_FREE = ValueClass is MutexValue


class LoopValue:
    """`MutexValue` without the lock, for series that only the event loop's thread writes (the
    request path) and reads (the scrape and /admin/stats run on the same loop). Same methods,
    so the library's exposition (`_child_samples` → `get()`, `get_exemplar()`) is unchanged."""

    __slots__ = ("_value", "_exemplar")
    _multiprocess = False

    def __init__(self) -> None:
        self._value = 0.0
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


class LoopCounter(Counter):
    """A `Counter` whose series hold a `LoopValue`: `inc()` is one float add. Only for
    families written from the event loop (not the span exporter's thread: `tracing_exported`
    stays a plain `Counter`). Exemplars, negative amounts and a parent without label values
    take the library's own `inc` (its checks and errors)."""

    _fast: LoopValue | None = None

    def _metric_init(self) -> None:
        super()._metric_init()
        if LOCK_FREE:
            self._fast = self._value = LoopValue()

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        fast = self._fast
        if fast is None or exemplar or amount < 0:
            super().inc(amount, exemplar)
            return
        fast._value += amount


class LoopHistogram(Histogram):
    """A `Histogram` whose series hold `LoopValue`s: `observe()` is a float add and one
    bisection over the bounds (the first bucket with `amount <= bound`, as the library's scan
    finds it). Exemplars and NaN take the library's own `observe`."""

    _fast: tuple[LoopValue, list[LoopValue], list[float]] | None = None

    def _metric_init(self) -> None:
        super()._metric_init()
        if LOCK_FREE:
            total = LoopValue()
            buckets = [LoopValue() for _ in self._upper_bounds]
            self._sum = total
            self._buckets = buckets
            self._fast = (total, buckets, self._upper_bounds)

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        fast = self._fast
        if fast is None or exemplar or amount != amount:
            super().observe(amount, exemplar)
            return
        total, buckets, bounds = fast
        total._value += amount
        buckets[bisect_left(bounds, amount)]._value += 1


class ChildCache(dict[Any, Any]):
    """The bound children of one metric family, by key: a hit is one dict lookup (no label
    resolution, no closure); a miss binds the child once with `bind(key)` and keeps it. Keys
    must come from bounded sets (see the module docstring)."""

    __slots__ = ("_bind",)

    def __init__(self, bind: Callable[[Any], Any]) -> None:
        super().__init__()
        self._bind = bind

    @classmethod
    def of(cls, family: Any) -> ChildCache:
        """Keyed by the tuple of label values, in the family's label order."""
        return cls(lambda labels: family.labels(*labels))

    def __missing__(self, key: Any) -> Any:
        child = self[key] = self._bind(key)
        return child


class CacheRequestCollector(Collector):
    """`openflare_cache_requests_total{route, cache_status}` from plain per-route dicts of
    ints: the access-log stage adds one with a dict update (no lock, no child object: the
    event loop is the only writer, and the scrape runs on the same loop)."""

    def __init__(self) -> None:
        self.by_route: dict[str, dict[str, int]] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "openflare_cache_requests",
            "Requests the cache stage answered or passed on, by route and cache status (HIT, "
            "MISS, STORE, BYPASS, STALE, REVALIDATED, EXPIRED, ERROR).",
            labels=("route", "cache_status"),
        )
        for route, counts in list(self.by_route.items()):
            for cache_status, count in list(counts.items()):
                family.add_metric((route, cache_status), count)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class UpstreamPoolCollector(Collector):
    """Connections of every upstream pool of the current runtime, read at scrape time."""

    def __init__(self) -> None:
        self.pools: Callable[[], Iterable[UpstreamPool]] = tuple

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "openflare_upstream_connections",
            "Connections of each upstream pool, by state (in_use: carrying a request, idle: "
            "kept alive for reuse).",
            labels=("upstream", "state"),
        )
        limit = GaugeMetricFamily(
            "openflare_upstream_connections_limit",
            "The most connections each upstream pool opens (upstreams[].max_idle_conns; "
            "0 = no cap).",
            labels=("upstream",),
        )
        for pool in self.pools():
            connections.add_metric((pool.name, "in_use"), pool.connections_in_use())
            connections.add_metric((pool.name, "idle"), pool.connections_idle())
            limit.add_metric((pool.name,), pool.connection_limit())
        yield connections
        yield limit

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Metrics:
    """Every metric family of the proxy, with cached children for the hot path."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = LoopCounter(
            "openflare_requests_total",
            "Requests answered, by route, method, status class and status code.",
            ("route", "method", "status_class", "code"),
            registry=r,
        )
        self.request_duration = LoopHistogram(
            "openflare_request_duration_seconds",
            "Time from request received to response finished, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.response_bytes = LoopCounter(
            "openflare_response_bytes_total",
            "Response body bytes sent to clients, by route.",
            ("route",),
            registry=r,
        )
        self.in_flight = Gauge(
            "openflare_in_flight_requests", "Requests being handled right now.", registry=r
        )
        # a plain int on the hot path; the gauge reads it at scrape time
        self.in_flight_now = 0
        self.in_flight.set_function(lambda: self.in_flight_now)
        self.rejections = LoopCounter(
            "openflare_rejected_requests_total",
            "Requests the edge refused itself (parser, limits, normalize, route, forward), "
            "by stage and reason.",
            ("stage", "reason"),
            registry=r,
        )
        self.panics = LoopCounter(
            "openflare_panics_total",
            "Unexpected exceptions turned into 500 responses by the recovery stage.",
            registry=r,
        )
        self.upstream_errors = LoopCounter(
            "openflare_upstream_errors_total",
            "Failed upstream exchanges, by upstream and kind (connect, timeout, reset, protocol).",
            ("upstream", "kind"),
            registry=r,
        )
        self.upstream_duration = LoopHistogram(
            "openflare_upstream_duration_seconds",
            "Time from sending the upstream request to its response headers, by upstream.",
            ("upstream",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = LoopHistogram(
            "openflare_stage_duration_seconds",
            "Time spent in the pipeline stages that do real work (waf, ratelimit, cache_lookup).",
            ("stage",),
            buckets=(
                0.00001,
                0.000025,
                0.00005,
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.1,
            ),
            registry=r,
        )
        self.waf_decisions = LoopCounter(
            "openflare_waf_decisions_total",
            "WAF rule matches by rule id and action (block, log, allow, would_block, bypass_cache)"
            ".",
            ("rule_id", "action"),
            registry=r,
        )
        self.ratelimit_decisions = LoopCounter(
            "openflare_ratelimit_total",
            "Rate-limit decisions by rule id and decision (allow, deny, would_block, error).",
            ("rule_id", "decision"),
            registry=r,
        )
        self.ratelimit_backend_errors = Counter(
            "openflare_ratelimit_backend_errors_total",
            "Rate-limit backend failures (e.g. Redis unreachable), by backend.",
            ("backend",),
            registry=r,
        )
        self.cache_operations = LoopCounter(
            "openflare_cache_operations_total",
            "Cache outcomes by operation (hit, miss, bypass, store, expired, stale, revalidated, "
            "error, purge).",
            ("operation",),
            registry=r,
        )
        self.cache_size_bytes = Gauge(
            "openflare_cache_size_bytes", "Bytes held by the cache store.", registry=r
        )
        self.cache_entries = Gauge(
            "openflare_cache_entries", "Entries held by the cache store.", registry=r
        )
        self.cache_evictions = Counter(
            "openflare_cache_evictions_total", "Entries evicted to stay within limits.", registry=r
        )
        self.cache_requests = CacheRequestCollector()
        r.register(self.cache_requests)
        self.cache_stale_served = LoopCounter(
            "openflare_cache_stale_served_total",
            "Stale responses served (stale-while-revalidate, stale-if-error).",
            registry=r,
        )
        self.cache_collapsed = LoopCounter(
            "openflare_cache_collapsed_requests_total",
            "Requests that waited for another request's origin fetch instead of making their own.",
            registry=r,
        )
        self.config_reloads = Counter(
            "openflare_config_reloads_total",
            "Config reload attempts, by result (ok, error, unchanged).",
            ("result",),
            registry=r,
        )
        for result in RELOAD_RESULTS:  # present at 0, so increase() sees the first failure
            self.config_reloads.labels(result)
        self.config_info = Info(
            "openflare_config", "The loaded config bundle (hash of its files).", registry=r
        )
        self.build_info = Info("openflare_build", "Build information.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        self.tracing_exported = Counter(
            "openflare_tracing_exported_spans_total",
            "Spans handed to the OTLP exporter, by result (ok, error); 0 while tracing is off.",
            ("result",),
            registry=r,
        )
        for result in ("ok", "error"):
            self.tracing_exported.labels(result)
        self.upstream_pools = UpstreamPoolCollector()
        r.register(self.upstream_pools)
        # one ChildCache per family the hot path writes to
        self._requests = ChildCache(self._bind_request)  # (route, method label, status)
        self._routes = ChildCache(self._bind_route)  # route
        self._rejections = ChildCache.of(self.rejections)
        self._upstream_errors = ChildCache.of(self.upstream_errors)
        self._upstream_latency = ChildCache.of(self.upstream_duration)
        self._stage_latency = ChildCache.of(self.stage_duration)
        self._waf_decisions = ChildCache.of(self.waf_decisions)
        self._ratelimit_decisions = ChildCache.of(self.ratelimit_decisions)
        self._cache_operations = ChildCache.of(self.cache_operations)
        self.cache_counts: dict[str, int] = {}  # the same counts, for /admin/cache/stats
        # the last WAF blocks and rate-limit refusals, for the dashboard (/admin/stats/security)
        self.recent_events = RecentEvents()

    def request_child(self, route: str, method: str, status: int) -> Any:
        return self._requests[(route, method_label(method), status)]

    def _bind_request(self, key: tuple[str, str, int]) -> Any:
        route, method, status = key
        return self.requests.labels(route, method, status_class(status), status_code(status))

    def route_children(self, route: str) -> tuple[Any, Any, dict[str, int]]:
        """(latency histogram, response bytes counter, request counts by cache status); the
        caller counts a cache status as `counts[cache_status_label(s)] += 1`."""
        children: tuple[Any, Any, dict[str, int]] = self._routes[route]
        return children

    def _bind_route(self, route: str) -> tuple[Any, Any, dict[str, int]]:
        counts = self.cache_requests.by_route.setdefault(route, {})
        return (self.request_duration.labels(route), self.response_bytes.labels(route), counts)

    def export_result(self, result: str, spans: int) -> None:
        """Called by the span exporter's thread after each batch."""
        self.tracing_exported.labels(result).inc(spans)

    def upstream_error(self, upstream: str, kind: str) -> None:
        self._upstream_errors[(upstream, kind)].inc()

    def reject(self, stage: str, reason: str) -> None:
        self._rejections[(stage, reason)].inc()

    def upstream_latency(self, upstream: str) -> Any:
        return self._upstream_latency[(upstream,)]

    def waf_decision(self, rule_id: str, action: str) -> None:
        """Rule ids come from the loaded rule file, so the label set is bounded."""
        self._waf_decisions[(rule_id, action)].inc()

    def waf_rules(self, series: Iterable[tuple[str, str]]) -> None:
        """Binds the `(rule_id, action)` series a new WAF ruleset can count (pipeline/waf.py
        `decision_series`), so each is exposed at 0 before its first match: `rate()` and
        `increase()` then see the first block, not only the second."""
        for key in series:
            self._waf_decisions[key]  # a miss binds the child: that is the point

    def ratelimit_decision(self, rule_id: str, decision: str) -> None:
        self._ratelimit_decisions[(rule_id, decision)].inc()

    def cache_operation(self, operation: str) -> None:
        self._cache_operations[(operation,)].inc()
        self.cache_counts[operation] = self.cache_counts.get(operation, 0) + 1
        if operation == "stale":
            self.cache_stale_served.inc()

    def stage_latency(self, stage: str) -> Any:
        """The histogram child for `stage`; call `.observe(seconds)` on it."""
        return self._stage_latency[(stage,)]

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition the scraper asked for (`Accept`), and its content type."""
        if "application/openmetrics-text" not in accept:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
