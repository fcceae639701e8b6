"""Generates OpenFlare's Grafana dashboards (plain Python, no dependencies).

    python dashboards/generate.py           # rewrite dashboards/*.json
    python dashboards/generate.py --check   # exit 1 when a committed file is out of date

Every dashboard: current Grafana JSON model (`schemaVersion` 41), a stable `uid`, the data
source as the `${datasource}` variable, and `namespace` / `job` / `instance` variables (plus
`route` where it helps) that every query filters on. The queries are designed to return data
whenever the proxy has traffic; `e2e/test_observability.py` evaluates every one of them against
a real Prometheus scraping a real proxy and fails on any query that returns nothing.
The rows and panels are described in docs/10-observability.md.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 41
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"'
ROUTE = 'route=~"$route"'
RATE = "$__rate_interval"
RANGE = "$__range"
LOOKUP = 'cache_status!="BYPASS"'  # requests the cache looked up (bypassed ones never are)
SERVED_FROM_CACHE = 'cache_status=~"HIT|STALE"'


def eq(name: str, value: str) -> str:
    return f'{name}="{value}"'


def match(name: str, value: str) -> str:
    return f'{name}=~"{value}"'


def sel(*extra: str) -> str:
    return "{" + ", ".join([SEL, *extra]) + "}"


def rate(metric: str, *extra: str, window: str = RATE) -> str:
    return f"rate({metric}{sel(*extra)}[{window}])"


def quantile(q: float, metric: str, by: str = "", *extra: str) -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({rate(metric, *extra)}))"


def ratio(part: str, whole: str, by: str = "") -> str:
    """sum(part)/sum(whole); a group with no `part` series counts as 0, not as missing."""
    group = f" by ({by})" if by else ""
    zero = f"sum{group} ({whole}) * 0" if by else "vector(0)"
    return f"(sum{group} ({part}) or {zero})\n/\nsum{group} ({whole})"


# --------------------------------------------------------------------------------------------
# panels


@dataclass
class Target:
    expr: str
    legend: str = "__auto"
    instant: bool = False
    table: bool = False
    heatmap: bool = False
    exemplar: bool = False

    def to_json(self, ref: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": self.expr,
            "legendFormat": self.legend,
            "range": not self.instant,
            "instant": self.instant,
            "refId": ref,
        }
        if self.table:
            out["format"] = "table"
        elif self.heatmap:
            out["format"] = "heatmap"
        if self.exemplar:
            out["exemplar"] = True
        return out


@dataclass
class Panel:
    kind: str  # timeseries | stat | table | bargauge | heatmap
    title: str
    description: str
    targets: list[Target]
    unit: str = "short"
    width: int = 12
    height: int = 8
    min_zero: bool = True
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    stack: bool = False
    extra_options: dict[str, Any] = field(default_factory=dict)

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "unit": self.unit,
            "color": {"mode": "palette-classic" if self.kind == "timeseries" else "thresholds"},
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": color, "value": value} for value, color in self.thresholds],
            },
            "mappings": [],
        }
        if self.min_zero and self.kind != "heatmap":
            defaults["min"] = 0
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10,
                "showPoints": "never",
                "spanNulls": False,
                "axisSoftMin": 0,
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
            }
        panel: dict[str, Any] = {
            "datasource": DATASOURCE,
            "description": self.description,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "id": panel_id,
            "options": self.options(),
            "targets": [t.to_json(chr(ord("A") + i)) for i, t in enumerate(self.targets)],
            "title": self.title,
            "type": self.kind,
        }
        return panel

    def options(self) -> dict[str, Any]:
        reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
        options: dict[str, Any]
        if self.kind == "timeseries":
            options = {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        elif self.kind == "stat":
            options = {
                "reduceOptions": reduce,
                "colorMode": "value",
                "graphMode": "area",
                "justifyMode": "auto",
                "orientation": "auto",
                "textMode": "auto",
                "wideLayout": True,
                "showPercentChange": False,
            }
        elif self.kind == "bargauge":
            options = {
                "reduceOptions": reduce,
                "displayMode": "basic",
                "orientation": "horizontal",
                "showUnfilled": True,
                "valueMode": "color",
                "namePlacement": "auto",
                "sizing": "auto",
                "minVizHeight": 16,
                "minVizWidth": 8,
                "maxVizHeight": 300,
            }
        elif self.kind == "heatmap":
            options = {
                "calculate": False,
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5},
                "exemplars": {"color": "rgba(255,0,255,0.7)"},
                "yAxis": {"axisPlacement": "left", "unit": "s"},
                "rowsFrame": {"layout": "auto"},
                "tooltip": {"mode": "single", "yHistogram": False},
                "legend": {"show": True},
            }
        else:  # table
            options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
        options.update(self.extra_options)
        return options


def timeseries(title: str, description: str, *targets: Target, **kw: Any) -> Panel:
    return Panel("timeseries", title, description, list(targets), **kw)


def stat(title: str, description: str, expr: str, **kw: Any) -> Panel:
    kw.setdefault("width", 4)
    kw.setdefault("height", 5)
    return Panel("stat", title, description, [Target(expr, legend="")], **kw)


def bars(title: str, description: str, expr: str, legend: str, **kw: Any) -> Panel:
    return Panel("bargauge", title, description, [Target(expr, legend, instant=True)], **kw)


@dataclass
class Row:
    title: str
    panels: list[Panel]


# --------------------------------------------------------------------------------------------
# dashboards


def variables(with_route: bool) -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "datasource": DATASOURCE,
            "definition": query,
            "includeAll": True,
            "label": label,
            "multi": True,
            "name": name,
            "options": [],
            "query": {
                "qryType": 1,
                "query": query,
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            },
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "type": "query",
        }

    result = [
        {
            "current": {},
            "includeAll": False,
            "label": "Data source",
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "type": "datasource",
        },
        query_var("namespace", "Namespace", "label_values(openflare_build_info, namespace)"),
        query_var("job", "Job", 'label_values(openflare_build_info{namespace=~"$namespace"}, job)'),
        query_var(
            "instance",
            "Instance",
            'label_values(openflare_build_info{namespace=~"$namespace", job=~"$job"}, instance)',
        ),
    ]
    if with_route:
        result.append(
            query_var("route", "Route", f"label_values(openflare_requests_total{sel()}, route)")
        )
    return result


def dashboard(
    uid: str, title: str, description: str, rows: list[Row], with_route: bool
) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": panel_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        panel_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x = 0
                y += row_height
                row_height = 0
            panels.append(panel.to_json(panel_id, x, y))
            panel_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                {
                    "datasource": DATASOURCE,
                    "enable": True,
                    "expr": "sum by (instance, result) (increase(openflare_config_reloads_total"
                    f"{sel(match('result', 'ok|error'))}[2m])) > 0",
                    "iconColor": "purple",
                    "name": "Config reloads",
                    "step": "1m",
                    "textFormat": "{{result}} on {{instance}}",
                    "titleFormat": "Config reload",
                },
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "dashboard",
                "includeVars": True,
                "keepTime": True,
                "tags": ["openflare"],
                "targetBlank": False,
                "title": "OpenFlare",
                "type": "dashboards",
            }
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["openflare"],
        "templating": {"list": variables(with_route)},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


REQUESTS = "openflare_requests_total"
DURATION = "openflare_request_duration_seconds_bucket"
UPSTREAM_DURATION = "openflare_upstream_duration_seconds_bucket"
STAGE_DURATION = "openflare_stage_duration_seconds_bucket"
CACHE_REQUESTS = "openflare_cache_requests_total"
WAF = "openflare_waf_decisions_total"
RATELIMIT = "openflare_ratelimit_total"
ERROR_STEPS: list[tuple[float | None, str]] = [(None, "green"), (0.01, "orange"), (0.05, "red")]


def overview() -> dict[str, Any]:
    rows = [
        Row(
            "Health",
            [
                stat(
                    "Requests / s", "All requests answered.", f"sum({rate(REQUESTS)})", unit="reqps"
                ),
                stat(
                    "5xx ratio",
                    "Share of responses with a 5xx status, from the edge or the origin.",
                    ratio(rate(REQUESTS, 'status_class="5xx"'), rate(REQUESTS)),
                    unit="percentunit",
                    thresholds=ERROR_STEPS,
                ),
                stat(
                    "p99 latency",
                    "99th percentile of the time from request received to response finished.",
                    quantile(0.99, DURATION),
                    unit="s",
                    thresholds=[(None, "green"), (0.5, "orange"), (1.0, "red")],
                ),
                stat(
                    "In flight",
                    "Requests being handled right now.",
                    f"sum(openflare_in_flight_requests{sel()})",
                ),
                stat(
                    "Targets up",
                    "Scrape targets of the selected jobs that answered the last scrape.",
                    f"sum(up{sel()})",
                ),
                stat(
                    "Failed reloads",
                    "Config reloads refused in the selected time range (the old config kept "
                    "serving).",
                    f"sum(increase(openflare_config_reloads_total{sel(eq('result', 'error'))}"
                    f"[{RANGE}]))",
                    thresholds=[(None, "green"), (1, "red")],
                ),
            ],
        ),
        Row(
            "Traffic",
            [
                timeseries(
                    "Requests by status class",
                    "Requests per second by status class, for the selected routes.",
                    Target(
                        f"sum by (status_class) ({rate(REQUESTS, ROUTE)})",
                        "{{status_class}}",
                    ),
                    unit="reqps",
                    stack=True,
                ),
                timeseries(
                    "Requests by route",
                    "Requests per second by route id (`none`: answered before routing).",
                    Target(f"sum by (route) ({rate(REQUESTS, ROUTE)})", "{{route}}"),
                    unit="reqps",
                ),
                timeseries(
                    "5xx ratio by route",
                    "Share of 5xx responses per route.",
                    Target(
                        ratio(
                            rate(REQUESTS, ROUTE, 'status_class="5xx"'),
                            rate(REQUESTS, ROUTE),
                            by="route",
                        ),
                        "{{route}}",
                    ),
                    unit="percentunit",
                ),
                timeseries(
                    "Response bytes by route",
                    "Body bytes sent to clients per second.",
                    Target(
                        f"sum by (route) ({rate('openflare_response_bytes_total', ROUTE)})",
                        "{{route}}",
                    ),
                    unit="Bps",
                ),
            ],
        ),
        Row(
            "Latency",
            [
                timeseries(
                    "Request latency p50 / p95 / p99",
                    "Client-visible latency. With tracing on, the dots are exemplars: click "
                    "one to open its trace.",
                    *[
                        Target(quantile(q, DURATION, "", ROUTE), f"p{int(q * 100)}", exemplar=True)
                        for q in (0.5, 0.95, 0.99)
                    ],
                    unit="s",
                ),
                timeseries(
                    "p99 latency by route",
                    "99th percentile latency per route.",
                    Target(quantile(0.99, DURATION, "route", ROUTE), "{{route}}"),
                    unit="s",
                ),
                Panel(
                    "heatmap",
                    "Request latency distribution",
                    "How many requests fell in each latency bucket.",
                    [
                        Target(
                            f"sum by (le) (increase({DURATION}{sel(ROUTE)}[{RATE}]))",
                            "{{le}}",
                            heatmap=True,
                        )
                    ],
                    unit="s",
                ),
                timeseries(
                    "Stage latency p99",
                    "Time spent inside the stages that do real work (waf, ratelimit, "
                    "cache_lookup): where the edge's own time goes.",
                    Target(quantile(0.99, STAGE_DURATION, "stage"), "{{stage}}"),
                    unit="s",
                ),
            ],
        ),
        Row(
            "Upstreams",
            [
                timeseries(
                    "Upstream latency p50 / p99",
                    "Time from sending the upstream request to its response headers.",
                    Target(quantile(0.5, UPSTREAM_DURATION, "upstream"), "{{upstream}} p50"),
                    Target(
                        quantile(0.99, UPSTREAM_DURATION, "upstream"),
                        "{{upstream}} p99",
                        exemplar=True,
                    ),
                    unit="s",
                ),
                timeseries(
                    "Upstream errors",
                    "Failed upstream exchanges per second by upstream and kind (connect, "
                    "timeout, reset, protocol): the edge's 502 and 504 answers.",
                    Target(
                        f"sum by (upstream, kind) ({rate('openflare_upstream_errors_total')})",
                        "{{upstream}} {{kind}}",
                    ),
                    unit="reqps",
                ),
                timeseries(
                    "Upstream connections",
                    "Connections per upstream pool: carrying a request (in_use) or kept alive "
                    "for reuse (idle).",
                    Target(
                        f"sum by (upstream, state) (openflare_upstream_connections{sel()})",
                        "{{upstream}} {{state}}",
                    ),
                ),
                timeseries(
                    "Upstream pool use",
                    "In-use connections against the pool's cap (upstreams[].max_idle_conns); "
                    "at 100% new requests wait for a connection.",
                    Target(
                        "sum by (upstream) (openflare_upstream_connections"
                        f"{sel(eq('state', 'in_use'))})\n/\n"
                        f"sum by (upstream) (openflare_upstream_connections_limit{sel()} > 0)",
                        "{{upstream}}",
                    ),
                    unit="percentunit",
                ),
            ],
        ),
        Row(
            "Process",
            [
                timeseries(
                    "Refused before routing",
                    "Requests the limits, normalize, route and forward stages refused, by reason.",
                    Target(
                        f"sum by (stage, reason) ({rate('openflare_rejected_requests_total')})",
                        "{{stage}} {{reason}}",
                    ),
                    unit="reqps",
                    width=8,
                ),
                timeseries(
                    "Panics",
                    "Exceptions in a stage turned into a 500 by the recovery stage; every one "
                    "has a `panic` log line.",
                    Target(f"sum({rate('openflare_panics_total')})", "panics"),
                    unit="reqps",
                    width=8,
                ),
                timeseries(
                    "Config reloads",
                    "Reload attempts by result.",
                    Target(
                        f"sum by (result) (increase(openflare_config_reloads_total{sel()}"
                        f"[{RATE}]))",
                        "{{result}}",
                    ),
                    width=8,
                ),
                Panel(
                    "table",
                    "Versions and config",
                    "What each instance runs: build version and the hash of its config bundle.",
                    [
                        Target(
                            f"max by (instance, version, python) (openflare_build_info{sel()})",
                            instant=True,
                            table=True,
                        ),
                        Target(
                            f"max by (instance, hash) (openflare_config_info{sel()})",
                            instant=True,
                            table=True,
                        ),
                    ],
                    width=16,
                ),
                timeseries(
                    "Spans exported",
                    "Spans handed to the OTLP collector per second, by result (0 while "
                    "tracing is off).",
                    Target(
                        f"sum by (result) ({rate('openflare_tracing_exported_spans_total')})",
                        "{{result}}",
                    ),
                    width=8,
                ),
            ],
        ),
    ]
    return dashboard(
        "openflare-overview",
        "OpenFlare / Overview",
        "Is it healthy: traffic, errors, latency, upstreams, reloads.",
        rows,
        with_route=True,
    )


def cache() -> dict[str, Any]:
    hit = rate(CACHE_REQUESTS, ROUTE, SERVED_FROM_CACHE)
    lookups = rate(CACHE_REQUESTS, ROUTE, LOOKUP)
    rows = [
        Row(
            "Effectiveness",
            [
                stat(
                    "Hit ratio",
                    "Lookups answered from the cache (HIT or STALE) among all lookups "
                    "(BYPASS excluded: those were never cacheable).",
                    ratio(hit, lookups),
                    unit="percentunit",
                    thresholds=[(None, "red"), (0.3, "orange"), (0.6, "green")],
                ),
                stat(
                    "Stored bytes",
                    "Bytes held by the cache store.",
                    f"sum(openflare_cache_size_bytes{sel()})",
                    unit="bytes",
                ),
                stat(
                    "Entries",
                    "Entries held by the cache store.",
                    f"sum(openflare_cache_entries{sel()})",
                ),
                stat(
                    "Evictions",
                    "Entries evicted to stay within cache.max_entries / max_bytes, in the "
                    "selected time range.",
                    f"sum(increase(openflare_cache_evictions_total{sel()}[{RANGE}]))",
                ),
                stat(
                    "Stale serves",
                    "Stale responses served in the selected time range.",
                    f"sum(increase(openflare_cache_stale_served_total{sel()}[{RANGE}]))",
                ),
                stat(
                    "Collapsed requests",
                    "Requests that waited for another request's origin fetch, in the selected "
                    "time range.",
                    f"sum(increase(openflare_cache_collapsed_requests_total{sel()}[{RANGE}]))",
                ),
                timeseries(
                    "Hit ratio by route",
                    "Share of lookups served from the cache, per route.",
                    Target(ratio(hit, lookups, by="route"), "{{route}}"),
                    unit="percentunit",
                ),
                timeseries(
                    "Cache status by route",
                    "Requests per second by route and cache status (X-Edge-Cache).",
                    Target(
                        f"sum by (route, cache_status) ({rate(CACHE_REQUESTS, ROUTE)})",
                        "{{route}} {{cache_status}}",
                    ),
                    unit="reqps",
                ),
            ],
        ),
        Row(
            "Store",
            [
                timeseries(
                    "Stored bytes",
                    "Bytes held by the cache store, per instance.",
                    Target(
                        f"sum by (instance) (openflare_cache_size_bytes{sel()})", "{{instance}}"
                    ),
                    unit="bytes",
                    width=8,
                ),
                timeseries(
                    "Entries",
                    "Entries held by the cache store, per instance.",
                    Target(f"sum by (instance) (openflare_cache_entries{sel()})", "{{instance}}"),
                    width=8,
                ),
                timeseries(
                    "Evictions",
                    "Entries evicted per second to stay within the limits.",
                    Target(f"sum({rate('openflare_cache_evictions_total')})", "evictions"),
                    unit="ops",
                    width=8,
                ),
                timeseries(
                    "Cache operations",
                    "Cache outcomes per second by operation (hit, miss, store, bypass, stale, "
                    "revalidated, expired, error, purge, invalidate).",
                    Target(
                        f"sum by (operation) ({rate('openflare_cache_operations_total')})",
                        "{{operation}}",
                    ),
                    unit="ops",
                    width=24,
                ),
            ],
        ),
        Row(
            "Origin protection",
            [
                timeseries(
                    "Stale serves",
                    "Stale responses served per second (stale-while-revalidate, stale-if-error).",
                    Target(f"sum({rate('openflare_cache_stale_served_total')})", "stale"),
                    unit="ops",
                    width=8,
                ),
                timeseries(
                    "Collapsed requests",
                    "Requests per second that waited for another request's origin fetch "
                    "instead of making their own.",
                    Target(f"sum({rate('openflare_cache_collapsed_requests_total')})", "collapsed"),
                    unit="ops",
                    width=8,
                ),
                timeseries(
                    "Purges and invalidations",
                    "Purge API calls and invalidations by unsafe requests (RFC 9111 §4.4).",
                    Target(
                        "sum by (operation) (increase(openflare_cache_operations_total"
                        f"{sel(match('operation', 'purge|invalidate'))}[{RATE}]))",
                        "{{operation}}",
                    ),
                    width=8,
                ),
            ],
        ),
    ]
    return dashboard(
        "openflare-cache",
        "OpenFlare / Cache",
        "Is the cache working: hit ratio by route, store size, evictions, stale serves, "
        "collapsed requests, purges.",
        rows,
        with_route=True,
    )


def security() -> dict[str, Any]:
    rows = [
        Row(
            "Summary",
            [
                stat(
                    "WAF blocks",
                    "Requests the WAF blocked in the selected time range.",
                    f"sum(increase({WAF}{sel(eq('action', 'block'))}[{RANGE}]))",
                    width=6,
                ),
                stat(
                    "WAF would-block",
                    "Matches of rules in shadow mode (logged, not blocked) in the selected "
                    "time range.",
                    f"sum(increase({WAF}{sel(eq('action', 'would_block'))}[{RANGE}]))",
                    width=6,
                ),
                stat(
                    "Rate-limit denials",
                    "Requests answered 429 by the rate limiter in the selected time range.",
                    f"sum(increase({RATELIMIT}{sel(eq('decision', 'deny'))}[{RANGE}]))",
                    width=6,
                ),
                stat(
                    "Refused requests",
                    "Requests refused by the limits and normalize stages (400, 413, 414, "
                    "431) in the selected time range.",
                    "sum(increase(openflare_rejected_requests_total"
                    f"{sel(match('stage', 'limits|normalize'))}[{RANGE}]))",
                    width=6,
                ),
            ],
        ),
        Row(
            "WAF",
            [
                timeseries(
                    "Blocks by rule",
                    "Blocked requests per second by the rule that matched.",
                    Target(f"sum by (rule_id) ({rate(WAF, eq('action', 'block'))})", "{{rule_id}}"),
                    unit="reqps",
                ),
                timeseries(
                    "Would-blocks by rule (shadow)",
                    "Matches of shadow-mode rules per second: what enforcing them would block.",
                    Target(
                        f"sum by (rule_id) ({rate(WAF, eq('action', 'would_block'))})",
                        "{{rule_id}}",
                    ),
                    unit="reqps",
                ),
                bars(
                    "Top rules",
                    "The rules that matched most in the selected time range (block and "
                    "would_block).",
                    f"topk(10, sum by (rule_id, action) (increase({WAF}"
                    f"{sel(match('action', 'block|would_block'))}[{RANGE}])))",
                    "{{rule_id}} ({{action}})",
                ),
                timeseries(
                    "WAF decisions by action",
                    "Rule matches per second by action (block, would_block, log, allow, "
                    "bypass_cache).",
                    Target(f"sum by (action) ({rate(WAF)})", "{{action}}"),
                    unit="reqps",
                ),
                timeseries(
                    "WAF inspection latency",
                    "Time the WAF spends evaluating a request (p50, p99).",
                    Target(quantile(0.5, STAGE_DURATION, "", 'stage="waf"'), "p50"),
                    Target(quantile(0.99, STAGE_DURATION, "", 'stage="waf"'), "p99"),
                    unit="s",
                    width=24,
                ),
            ],
        ),
        Row(
            "Rate limiting",
            [
                timeseries(
                    "Denials by rule",
                    "429 answers per second by rate-limit rule.",
                    Target(
                        f"sum by (rule_id) ({rate(RATELIMIT, eq('decision', 'deny'))})",
                        "{{rule_id}}",
                    ),
                    unit="reqps",
                ),
                timeseries(
                    "Would-blocks by rule (shadow)",
                    "Requests a shadow-mode rule would have denied, per second.",
                    Target(
                        f"sum by (rule_id) ({rate(RATELIMIT, eq('decision', 'would_block'))})",
                        "{{rule_id}}",
                    ),
                    unit="reqps",
                ),
                timeseries(
                    "Decisions",
                    "Rate-limit decisions per second (allow, deny, would_block, error: the "
                    "backend could not answer).",
                    Target(f"sum by (decision) ({rate(RATELIMIT)})", "{{decision}}"),
                    unit="reqps",
                ),
                bars(
                    "Top denying rules",
                    "The rate-limit rules that denied most in the selected time range.",
                    f"topk(10, sum by (rule_id) (increase({RATELIMIT}"
                    f"{sel(eq('decision', 'deny'))}[{RANGE}])))",
                    "{{rule_id}}",
                ),
            ],
        ),
        Row(
            "Responses",
            [
                bars(
                    "Top status codes",
                    "The most frequent response status codes in the selected time range.",
                    f"topk(10, sum by (code) (increase({REQUESTS}{sel()}[{RANGE}])))",
                    "{{code}}",
                ),
                timeseries(
                    "4xx and 5xx by code",
                    "Error responses per second by status code.",
                    Target(
                        f"sum by (code) ({rate(REQUESTS, match('status_class', '4xx|5xx'))})",
                        "{{code}}",
                    ),
                    unit="reqps",
                ),
                timeseries(
                    "Refused by stage and reason",
                    "Requests refused before routing by stage and reason (hostile encodings, "
                    "oversized requests, unknown hosts).",
                    Target(
                        f"sum by (stage, reason) ({rate('openflare_rejected_requests_total')})",
                        "{{stage}} {{reason}}",
                    ),
                    unit="reqps",
                    width=24,
                ),
            ],
        ),
    ]
    return dashboard(
        "openflare-security",
        "OpenFlare / Security",
        "What the WAF and the rate limiter are blocking, and the status codes clients get.",
        rows,
        with_route=False,
    )


DASHBOARDS = {
    "openflare-overview.json": overview,
    "openflare-cache.json": cache,
    "openflare-security.json": security,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(
            f"out of date: {', '.join(stale)} (run: python dashboards/generate.py)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
