"""Prometheus metrics. One registry per process, created once and kept across reloads.

Label values come only from bounded sets: route ids, upstream names, rule ids, a fixed list of
methods (anything else is `OTHER`), status classes (`2xx`), and fixed reason words. A raw path,
host or client value is never a label. Children are bound once per label tuple and cached, so
the hot path pays a dict lookup, not a label resolution.
"""

from __future__ import annotations

import platform
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from openflare import __version__

# `*_created` series double the series count for no operational value.
disable_created_metrics()  # type: ignore[no-untyped-call]

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
STATUS_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")
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


class Metrics:
    """Every metric family of the proxy, with cached children for the hot path."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "openflare_requests_total",
            "Requests answered, by route, method and status class.",
            ("route", "method", "status_class"),
            registry=r,
        )
        self.request_duration = Histogram(
            "openflare_request_duration_seconds",
            "Time from request received to response finished, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.response_bytes = Counter(
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
        self.rejections = Counter(
            "openflare_rejected_requests_total",
            "Requests the edge refused itself (parser, limits, normalize, route, forward), "
            "by stage and reason.",
            ("stage", "reason"),
            registry=r,
        )
        self.panics = Counter(
            "openflare_panics_total",
            "Unexpected exceptions turned into 500 responses by the recovery stage.",
            registry=r,
        )
        self.upstream_errors = Counter(
            "openflare_upstream_errors_total",
            "Failed upstream exchanges, by upstream and kind (connect, timeout, reset, protocol).",
            ("upstream", "kind"),
            registry=r,
        )
        self.upstream_duration = Histogram(
            "openflare_upstream_duration_seconds",
            "Time from sending the upstream request to its response headers, by upstream.",
            ("upstream",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
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
        self.waf_decisions = Counter(
            "openflare_waf_decisions_total",
            "WAF rule matches by rule id and action (block, log, allow, would_block, bypass_cache)"
            ".",
            ("rule_id", "action"),
            registry=r,
        )
        self.ratelimit_decisions = Counter(
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
        self.cache_operations = Counter(
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
        self.cache_collapsed = Counter(
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
        self.config_info = Info(
            "openflare_config", "The loaded config bundle (hash of its files).", registry=r
        )
        self.build_info = Info("openflare_build", "Build information.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        self._children: dict[tuple[Any, ...], Any] = {}
        self.cache_counts: dict[str, int] = {}  # the same counts, for /admin/cache/stats

    def request_child(self, route: str, method: str, status: int) -> Any:
        method = method_label(method)
        key = ("req", route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self.requests.labels(route, method, status_class(status))
            self._children[key] = child
        return child

    def route_children(self, route: str) -> tuple[Any, Any]:
        key = ("route", route)
        pair = self._children.get(key)
        if pair is None:
            pair = (self.request_duration.labels(route), self.response_bytes.labels(route))
            self._children[key] = pair
        return pair

    def upstream_error(self, upstream: str, kind: str) -> None:
        self.upstream_errors.labels(upstream, kind).inc()

    def reject(self, stage: str, reason: str) -> None:
        key = ("reject", stage, reason)
        child = self._children.get(key)
        if child is None:
            child = self.rejections.labels(stage, reason)
            self._children[key] = child
        child.inc()

    def upstream_latency(self, upstream: str) -> Any:
        key = ("up", upstream)
        child = self._children.get(key)
        if child is None:
            child = self.upstream_duration.labels(upstream)
            self._children[key] = child
        return child

    def _cached(self, key: tuple[Any, ...], make: Any) -> Any:
        child = self._children.get(key)
        if child is None:
            child = make()
            self._children[key] = child
        return child

    def waf_decision(self, rule_id: str, action: str) -> None:
        """Rule ids come from the loaded rule file, so the label set is bounded."""
        key = ("waf", rule_id, action)
        self._cached(key, lambda: self.waf_decisions.labels(rule_id, action)).inc()

    def ratelimit_decision(self, rule_id: str, decision: str) -> None:
        key = ("rl", rule_id, decision)
        self._cached(key, lambda: self.ratelimit_decisions.labels(rule_id, decision)).inc()

    def cache_operation(self, operation: str) -> None:
        key = ("cache", operation)
        self._cached(key, lambda: self.cache_operations.labels(operation)).inc()
        self.cache_counts[operation] = self.cache_counts.get(operation, 0) + 1

    def stage_latency(self, stage: str) -> Any:
        """The histogram child for `stage`; call `.observe(seconds)` on it."""
        return self._cached(("stage", stage), lambda: self.stage_duration.labels(stage))

    def render(self) -> bytes:
        return generate_latest(self.registry)
