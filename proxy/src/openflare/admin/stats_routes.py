"""`/admin/stats/*`: the JSON the admin dashboard polls, usable by scripts too.

    GET /admin/stats/overview?window=10   requests/s, status mix, p50/p95/p99, in-flight,
                                          upstreams, and a 5-minute series for the charts
    GET /admin/stats/security?window=300  WAF decisions by rule and action, rate-limit
                                          decisions by rule, the last refusals with request ids
    GET /admin/stats/config               loaded hash, reload history, last error, and the
                                          effective config with secrets redacted

Read-only views over what the proxy keeps anyway: nothing here runs on the request path. The
Prometheus families are read (`collect()`) every `SAMPLE_INTERVAL` seconds by a task of the
admin app into a short ring of snapshots; rates, status mixes and percentiles are differences
between the snapshot taken now and the one `window` seconds old, so they describe recent
traffic, not the process's life. Percentiles are estimated from the latency histogram the way
Prometheus' `histogram_quantile` does (linear within a bucket), so they are as precise as the
buckets (observability/metrics.py `LATENCY_BUCKETS`). Every answer is documented, with an
example, in docs/13-admin-dashboard.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import Counter, Histogram

from openflare import __version__
from openflare.admin.auth import json_error
from openflare.config.loader import ConfigBundle
from openflare.config.reload import ConfigManager
from openflare.deps import Deps
from openflare.observability.metrics import Metrics
from openflare.observability.recent import RecentEvents
from openflare.runtime import RuntimeHolder

SAMPLE_INTERVAL = 2.0  # seconds between snapshots
HISTORY = 150  # snapshots kept: 5 minutes at 2 s
OVERVIEW_WINDOW = 10.0  # default window of the live numbers
SECURITY_WINDOW = 300.0
MAX_WINDOW = SAMPLE_INTERVAL * HISTORY
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
REDACTED = "<redacted>"
# config keys (any level) whose values are secrets
SECRET_KEY_PARTS = ("token", "password", "passwd", "secret", "credential", "private_key")
# mappings whose every value is a secret (tracing.headers: collector authentication)
SECRET_MAPPINGS = frozenset({"headers"})
SECRET_QUERY_PARTS = (*SECRET_KEY_PARTS, "pass", "key", "auth", "sig")

Buckets = tuple[tuple[float, ...], tuple[float, ...]]  # (upper bounds, cumulative counts)


# --------------------------------------------------------------------------------------------
# reading prometheus_client families


def read_counter(counter: Counter) -> dict[tuple[str, ...], float]:
    """Every child of `counter` by its label values."""
    values: dict[tuple[str, ...], float] = {}
    for family in counter.collect():
        names = list(family.samples[0].labels) if family.samples else []
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values[tuple(sample.labels[n] for n in names)] = sample.value
    return values


def read_histogram(histogram: Histogram, label: str) -> dict[str, Buckets]:
    """Cumulative bucket counts of `histogram`, summed by the value of `label`."""
    bounds: dict[str, list[float]] = {}
    counts: dict[str, list[float]] = {}
    for family in histogram.collect():
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            key = sample.labels.get(label, "")
            upper = float(sample.labels["le"])
            series_bounds = bounds.setdefault(key, [])
            series_counts = counts.setdefault(key, [])
            if upper in series_bounds:  # a second child with the same key: add it up
                series_counts[series_bounds.index(upper)] += sample.value
            else:
                series_bounds.append(upper)
                series_counts.append(sample.value)
    return {key: (tuple(bounds[key]), tuple(counts[key])) for key in bounds}


def merge_buckets(series: Iterable[Buckets]) -> Buckets:
    bounds: tuple[float, ...] = ()
    total: list[float] = []
    for upper, counts in series:
        if not total:
            bounds, total = upper, list(counts)
        elif upper == bounds:
            total = [a + b for a, b in zip(total, counts, strict=True)]
    return bounds, tuple(total)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' estimate of the q-quantile from cumulative bucket counts (the last bound is
    +Inf); None without observations. A rank in the +Inf bucket gives the largest finite
    bound."""
    bounds, counts = buckets
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    for index, (upper, count) in enumerate(zip(bounds, counts, strict=True)):
        if count < rank:
            continue
        if math.isinf(upper):
            return bounds[index - 1] if index > 0 else None
        lower = bounds[index - 1] if index > 0 else 0.0
        below = counts[index - 1] if index > 0 else 0.0
        inside = count - below
        if inside <= 0:
            return upper
        return lower + (upper - lower) * (rank - below) / inside
    return None


def bucket_delta(new: Buckets, old: Buckets | None) -> Buckets:
    if old is None or old[0] != new[0]:
        return new
    return new[0], tuple(max(0.0, a - b) for a, b in zip(new[1], old[1], strict=True))


def map_delta(new: Mapping[Any, float], old: Mapping[Any, float] | None) -> dict[Any, float]:
    old = old or {}
    return {key: max(0.0, value - old.get(key, 0.0)) for key, value in new.items()}


def percentiles_ms(buckets: Buckets) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for name, q in QUANTILES:
        value = histogram_quantile(q, buckets)
        result[name] = None if value is None else round(value * 1000, 3)
    return result


# --------------------------------------------------------------------------------------------
# snapshots


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # monotonic
    wall: float  # epoch seconds
    by_class: dict[str, float]
    by_code: dict[str, float]
    latency: Buckets
    bytes_sent: float
    in_flight: int
    upstream_latency: dict[str, Buckets]
    upstream_errors: dict[tuple[str, str], float]
    waf: dict[tuple[str, str], float]
    ratelimit: dict[tuple[str, str], float]
    cache: dict[str, float] = field(default_factory=dict)

    @property
    def requests(self) -> float:
        return sum(self.by_class.values())


def take_snapshot(metrics: Metrics, at: float, wall: float) -> Snapshot:
    by_class: dict[str, float] = {}
    by_code: dict[str, float] = {}
    for (_route, _method, klass, code), value in read_counter(metrics.requests).items():
        by_class[klass] = by_class.get(klass, 0.0) + value
        by_code[code] = by_code.get(code, 0.0) + value
    sent = sum(read_counter(metrics.response_bytes).values())
    errors = {(k[0], k[1]): v for k, v in read_counter(metrics.upstream_errors).items()}
    waf = {(k[0], k[1]): v for k, v in read_counter(metrics.waf_decisions).items()}
    limits = {(k[0], k[1]): v for k, v in read_counter(metrics.ratelimit_decisions).items()}
    return Snapshot(
        at=at,
        wall=wall,
        by_class=by_class,
        by_code=by_code,
        latency=merge_buckets(read_histogram(metrics.request_duration, "route").values()),
        bytes_sent=sent,
        in_flight=metrics.in_flight_now,
        upstream_latency=read_histogram(metrics.upstream_duration, "upstream"),
        upstream_errors=errors,
        waf=waf,
        ratelimit=limits,
        cache={k: float(v) for k, v in metrics.cache_counts.items()},
    )


class Sampler:
    """Snapshots of the metrics every `interval` seconds, the last `history` of them."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        interval: float = SAMPLE_INTERVAL,
        history: int = HISTORY,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.interval = interval
        self.ring: deque[Snapshot] = deque(maxlen=history)
        self.clock = clock
        self.wall = wall
        self.started = wall()

    def now(self) -> Snapshot:
        return take_snapshot(self.metrics, self.clock(), self.wall())

    def tick(self) -> Snapshot:
        snapshot = self.now()
        self.ring.append(snapshot)
        return snapshot

    def baseline(self, now: Snapshot, window: float) -> Snapshot | None:
        """The newest snapshot at least `window` seconds older than `now`, else the oldest."""
        chosen: Snapshot | None = None
        for snapshot in self.ring:
            if snapshot.at > now.at - window:
                break
            chosen = snapshot
        if chosen is None and self.ring and self.ring[0].at < now.at:
            chosen = self.ring[0]
        return chosen

    async def run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # the same error answers the next request as a 500; keep going
                pass
            await asyncio.sleep(self.interval)


STATS_SAMPLER = web.AppKey("stats_sampler", Sampler)


# --------------------------------------------------------------------------------------------
# the answers (pure functions of snapshots, config and state)


def outcome_sum(counts: Mapping[tuple[str, str], float], outcome: str) -> float:
    """The sum over rules of one action or decision (`block`, `deny`)."""
    return sum(value for (_rule, name), value in counts.items() if name == outcome)


def ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def cache_ratio(counts: Mapping[str, float]) -> float | None:
    """The hit ratio as `/admin/cache/stats` counts it."""
    hits = counts.get("hit", 0) + counts.get("stale", 0) + counts.get("revalidated", 0)
    misses = counts.get("miss", 0) + counts.get("store", 0) + counts.get("expired", 0)
    return ratio(hits, hits + misses)


def series(ring: Iterable[Snapshot]) -> list[dict[str, Any]]:
    """One point per sampling interval: the rates between consecutive snapshots."""
    points: list[dict[str, Any]] = []
    previous: Snapshot | None = None
    for snapshot in ring:
        if previous is not None and snapshot.at > previous.at:
            seconds = snapshot.at - previous.at
            requests = max(0.0, snapshot.requests - previous.requests)
            errors = max(0.0, snapshot.by_class.get("5xx", 0) - previous.by_class.get("5xx", 0))
            p95 = histogram_quantile(0.95, bucket_delta(snapshot.latency, previous.latency))
            points.append(
                {
                    "t": round(snapshot.wall, 3),
                    "rps": round(requests / seconds, 3),
                    "error_ratio": ratio(errors, requests),
                    "p95_ms": None if p95 is None else round(p95 * 1000, 3),
                    "in_flight": snapshot.in_flight,
                }
            )
        previous = snapshot
    return points


def upstream_rows(
    bundle: ConfigBundle,
    deps: Deps,
    now: Snapshot,
    base: Snapshot | None,
) -> list[dict[str, Any]]:
    pools = {pool.name: pool for pool in deps.upstreams.current()}
    rows: list[dict[str, Any]] = []
    for config in bundle.proxy.upstreams:
        name = config.name
        latency = now.upstream_latency.get(name, ((), ()))
        old = base.upstream_latency.get(name) if base is not None else None
        recent = bucket_delta(latency, old)
        answered = recent[1][-1] if recent[1] else 0.0
        errors_total: dict[str, float] = {}
        errors_recent: dict[str, float] = {}
        for (upstream, kind), value in now.upstream_errors.items():
            if upstream != name:
                continue
            before = base.upstream_errors.get((upstream, kind), 0.0) if base is not None else 0.0
            errors_total[kind] = value
            if value - before > 0:
                errors_recent[kind] = value - before
        failed = sum(errors_recent.values())
        if failed == 0:
            health = "ok" if answered else "idle"
        else:
            health = "failing" if answered == 0 else "degraded"
        pool = pools.get(name)
        rows.append(
            {
                "name": name,
                "base_url": redact_url(config.base_url),
                "health": health,
                "answered": answered,
                "errors": errors_recent,
                "errors_total": errors_total,
                "latency_ms": percentiles_ms(recent),
                "connections": {
                    "in_use": pool.connections_in_use() if pool else 0,
                    "idle": pool.connections_idle() if pool else 0,
                    "limit": pool.connection_limit() if pool else 0,
                },
            }
        )
    return rows


def overview(
    bundle: ConfigBundle,
    deps: Deps,
    sampler: Sampler,
    now: Snapshot,
    window: float,
    loaded_at: float,
) -> dict[str, Any]:
    base = sampler.baseline(now, window)
    seconds = now.at - base.at if base is not None else 0.0
    recent = map_delta(now.by_class, base.by_class if base else None)
    requests_recent = sum(recent.values())
    sent_recent = now.bytes_sent - (base.bytes_sent if base else 0.0)
    blocks = outcome_sum(now.waf, "block")
    denials = outcome_sum(now.ratelimit, "deny")
    blocks_before = outcome_sum(base.waf, "block") if base else 0.0
    denials_before = outcome_sum(base.ratelimit, "deny") if base else 0.0
    cache_recent = map_delta(now.cache, base.cache if base else None)
    return {
        "time": round(now.wall, 3),
        "version": __version__,
        "uptime_s": round(now.wall - sampler.started, 1),
        "window_s": round(seconds, 3),
        "config": {"hash": bundle.hash, "loaded_at": loaded_at},
        "requests": {
            "total": now.requests,
            "window": requests_recent,
            "per_second": round(requests_recent / seconds, 3) if seconds > 0 else None,
        },
        "status": {
            "window": {k: recent.get(k, 0.0) for k in STATUS_CLASSES},
            "total": {k: now.by_class.get(k, 0.0) for k in STATUS_CLASSES},
            "codes_window": {
                k: v
                for k, v in sorted(map_delta(now.by_code, base.by_code if base else None).items())
                if v > 0
            },
            "error_ratio": ratio(recent.get("5xx", 0.0), requests_recent),
        },
        "latency_ms": percentiles_ms(bucket_delta(now.latency, base.latency if base else None)),
        "in_flight": now.in_flight,
        "bytes_sent": {
            "total": now.bytes_sent,
            "per_second": round(sent_recent / seconds, 1) if seconds > 0 else None,
        },
        "cache": {
            "hit_ratio": cache_ratio(now.cache),
            "hit_ratio_window": cache_ratio(cache_recent),
        },
        "waf_rule_blocks": {"total": blocks, "window": max(0.0, blocks - blocks_before)},
        "ratelimit_rule_denials": {"total": denials, "window": max(0.0, denials - denials_before)},
        "upstreams": upstream_rows(bundle, deps, now, base),
        "series": {
            "interval_s": sampler.interval,
            "span_s": sampler.interval * (sampler.ring.maxlen or HISTORY),
            "points": series(sampler.ring),
        },
    }


def _by_rule(
    now: Mapping[tuple[str, str], float], base: Mapping[tuple[str, str], float] | None
) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    rules: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for (rule_id, outcome), value in now.items():
        total, recent = rules.setdefault(rule_id, ({}, {}))
        if value > 0:  # children bound ahead of time sit at 0
            total[outcome] = value
        delta = value - (base or {}).get((rule_id, outcome), 0.0)
        if delta > 0:
            recent[outcome] = delta
    return rules


def security(
    bundle: ConfigBundle,
    sampler: Sampler,
    now: Snapshot,
    window: float,
    recent_events: RecentEvents | None,
) -> dict[str, Any]:
    base = sampler.baseline(now, window)
    waf_file = bundle.waf
    waf_rules = {rule.id: rule for rule in waf_file.rules}
    decisions: list[dict[str, Any]] = []
    for rule_id, (total, recent) in _by_rule(now.waf, base.waf if base else None).items():
        rule = waf_rules.get(rule_id)
        shadow = waf_file.mode == "shadow" or (rule is not None and rule.mode == "shadow")
        decisions.append(
            {
                "rule_id": rule_id,
                "mode": "shadow" if shadow else "enforce",
                "description": rule.description if rule is not None else "",
                "tags": list(rule.tags) if rule is not None else [],
                "total": total,
                "window": recent,
            }
        )
    decisions.sort(key=lambda row: (-sum(row["window"].values()), -sum(row["total"].values())))
    limit_file = bundle.rate_limits
    limit_rules = {rule.id: rule for rule in limit_file.rules}
    limits: list[dict[str, Any]] = []
    for rule_id, (total, recent) in _by_rule(
        now.ratelimit, base.ratelimit if base else None
    ).items():
        limit_rule = limit_rules.get(rule_id)
        shadow = limit_file.mode == "shadow" or (
            limit_rule is not None and limit_rule.mode == "shadow"
        )
        limits.append(
            {
                "rule_id": rule_id,
                "mode": "shadow" if shadow else "enforce",
                "total": total,
                "window": recent,
            }
        )
    limits.sort(
        key=lambda row: (
            -row["window"].get("deny", 0),
            -row["total"].get("deny", 0),
            -sum(row["total"].values()),
        )
    )
    return {
        "time": round(now.wall, 3),
        "window_s": round(now.at - base.at, 3) if base is not None else 0.0,
        "waf": {
            "enabled": bool(waf_file.rules),
            "mode": waf_file.mode,
            "rules": len(waf_file.rules),
            "paranoia": waf_file.paranoia,
            "anomaly_threshold": waf_file.anomaly_threshold,
            "decisions": decisions,
        },
        "ratelimit": {
            "enabled": bool(limit_file.rules),
            "mode": limit_file.mode,
            "backend": limit_file.backend.type,
            "rules": len(limit_file.rules),
            "decisions": limits,
        },
        "recent": {
            "available": recent_events is not None,
            "capacity": recent_events.capacity if recent_events is not None else 0,
            "recorded": recent_events.recorded if recent_events is not None else 0,
            "events": recent_events.snapshot() if recent_events is not None else [],
        },
    }


# --------------------------------------------------------------------------------------------
# secrets


def _secret_name(name: str, parts: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in parts)


def redact_url(url: str) -> str:
    """`url` without its password (or a bare userinfo, which may be a token) and without the
    values of query parameters that look like secrets (`?password=`, `?token=`). Only those
    parts change: the rest is kept byte for byte."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return url
    cut = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found >= 0:
            cut = min(cut, found)
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        authority = f"{user}:{REDACTED}@{hostport}" if colon else f"{REDACTED}@{hostport}"
    before, question, after = tail.partition("?")
    if question:
        query, hash_mark, fragment = after.partition("#")
        pairs = []
        for pair in query.split("&"):
            name, equals, value = pair.partition("=")
            if equals and value and _secret_name(name, SECRET_QUERY_PARTS):
                value = REDACTED
            pairs.append(f"{name}{equals}{value}")
        tail = f"{before}?{'&'.join(pairs)}{hash_mark}{fragment}"
    return f"{scheme}://{authority}{tail}"


def redact(value: Any, path: str = "", found: list[str] | None = None) -> Any:
    """A copy of a JSON-like `value` with secrets replaced by `<redacted>`; the paths of what
    was replaced are appended to `found`."""
    found = found if found is not None else []
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            empty = item is None or item == "" or item == {} or item == []
            if not empty and _secret_name(str(key), SECRET_KEY_PARTS):
                out[key] = REDACTED
                found.append(where)
            elif key in SECRET_MAPPINGS and isinstance(item, Mapping):
                out[key] = {name: REDACTED for name in item}
                found.extend(f"{where}.{name}" for name in item)
            else:
                out[key] = redact(item, where, found)
        return out
    if isinstance(value, list | tuple):
        return [redact(item, f"{path}[{index}]", found) for index, item in enumerate(value)]
    if isinstance(value, str):
        cleaned = redact_url(value)
        if cleaned != value:
            found.append(path)
        return cleaned
    return value


def effective_config(bundle: ConfigBundle) -> tuple[dict[str, Any], list[str]]:
    """The loaded config as JSON with secrets redacted, and the paths that were redacted. The
    WAF pack is summarised (its patterns are long and say nothing to a dashboard)."""
    found: list[str] = []
    waf = bundle.waf
    config = {
        "proxy": redact(bundle.proxy.model_dump(mode="json"), "proxy", found),
        "admin_token_set": bundle.admin_token is not None,
        "waf": {
            "mode": waf.mode,
            "paranoia": waf.paranoia,
            "anomaly_threshold": waf.anomaly_threshold,
            "body": waf.body.model_dump(mode="json"),
            "exclusions": len(waf.exclusions),
            "routes": [route.model_dump(mode="json") for route in waf.routes],
            "rules": [
                {
                    "id": rule.id,
                    "enabled": rule.enabled,
                    "mode": rule.mode or waf.mode,
                    "action": rule.action.model_dump(mode="json"),
                    "severity": rule.severity,
                    "paranoia": rule.paranoia,
                    "tags": list(rule.tags),
                    "description": rule.description,
                }
                for rule in waf.rules
            ],
        },
        "cache_rules": redact(bundle.cache_rules.model_dump(mode="json"), "cache_rules", found),
        "rate_limits": redact(bundle.rate_limits.model_dump(mode="json"), "rate_limits", found),
    }
    return config, found


def config_view(manager: ConfigManager, bundle: ConfigBundle) -> dict[str, Any]:
    status = manager.status()
    effective, redacted = effective_config(bundle)
    status["history"] = list(reversed(status["history"]))  # newest first
    status["version"] = __version__
    status["effective"] = effective
    status["redacted"] = redacted
    return status


# --------------------------------------------------------------------------------------------
# routes


def window_of(request: web.Request, default: float) -> float:
    raw = request.query.get("window")
    if raw is None:
        return default
    value = float(raw)  # ValueError → 400
    if not math.isfinite(value) or not 0 < value <= MAX_WINDOW:
        raise ValueError(f"window must be between 0 and {MAX_WINDOW:g} seconds")
    return value


def json_answer(data: Mapping[str, Any]) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        content_type="application/json",
        headers=NO_STORE,
    )


def add_stats_routes(
    app: web.Application, holder: RuntimeHolder, deps: Deps, manager: ConfigManager
) -> None:
    sampler = Sampler(deps.metrics)
    app[STATS_SAMPLER] = sampler

    async def sampling(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(sampler.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sampling)

    def recent_events() -> RecentEvents | None:
        found = getattr(deps.metrics, "recent_events", None)
        return found if isinstance(found, RecentEvents) else None

    async def overview_handler(request: web.Request) -> web.Response:
        try:
            window = window_of(request, OVERVIEW_WINDOW)
        except ValueError as exc:
            return json_error(400, "bad_request", str(exc))
        runtime = holder.runtime
        answer = overview(runtime.bundle, deps, sampler, sampler.now(), window, runtime.loaded_at)
        return json_answer(answer)

    async def security_handler(request: web.Request) -> web.Response:
        try:
            window = window_of(request, SECURITY_WINDOW)
        except ValueError as exc:
            return json_error(400, "bad_request", str(exc))
        bundle = holder.runtime.bundle
        return json_answer(security(bundle, sampler, sampler.now(), window, recent_events()))

    async def config_handler(request: web.Request) -> web.Response:
        return json_answer(config_view(manager, holder.runtime.bundle))

    app.router.add_get("/admin/stats/overview", overview_handler)
    app.router.add_get("/admin/stats/security", security_handler)
    app.router.add_get("/admin/stats/config", config_handler)
