"""Explainability: the per-request decision trace, `Server-Timing`, and the explain dry run.

A `DecisionTrace` exists only for a request someone asked to see (`exchange.trace`; `None` for
every other request, which is why each stage pays at most one `is not None` check):

- a live request carrying the admin token in `explain.trace_header`, or coming from a
  client IP in `explain.trace_cidrs` (`full`: the trace goes to the `X-Edge-Trace` response
  header, the access-log line and the ring buffer behind `GET /admin/trace/{request_id}`);
- a live request on a route with `server_timing: true` (timing only: the `Server-Timing`
  header, with durations and decision words — never rule patterns or addresses);
- a `POST /admin/explain` dry run (`dry_run`: stages decide as usual but take no action with
  an effect: no rate-limit token is spent, no cache entry is stored or touched, no request is
  collapsed and nothing reaches the origin — `DryRunTerminal` ends that chain).

The `explain` stage (right after `recovery`, before `limits`) decides whether a live request is
traced, from the client IP and one header lookup, so a request `limits` or `normalize` refuses
is traced too (`note_refusal`: the refusing stage, its status and reason); the
`server_timing` stage (after `normalize`: it needs the normalized path to pick the route) adds
Server-Timing. Each factory returns `None` when its feature is not configured, so by default
neither is in the chain at all. The stages write their own entries (`note_*` below, or
`DecisionTrace.step`); `finish` assembles the record.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from openflare.admin.auth import secret_matches
from openflare.observability.logging import utc_timestamp
from openflare.pipeline.base import Exchange, Handler
from openflare.routing import Router

if TYPE_CHECKING:
    from multidict import CIMultiDict

    from openflare.admin.auth import AuthFailures
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.observability.decision_traces import TraceState
    from openflare.observability.logging import LogWriter
    from openflare.ratelimit.bucket import Decision, Limit
    from openflare.routing import Route
    from openflare.upstream.http1 import UpstreamResponse
    from openflare.waf.compile import Ruleset
    from openflare.waf.engine import Verdict

TRACE_HEADER = "X-Edge-Trace"
SERVER_TIMING_HEADER = "Server-Timing"
MAX_TARGET = 256  # characters of the raw request target kept in a trace
MAX_EXCERPT = 64  # characters of a WAF match excerpt kept in a trace
TIMED_STAGES = ("waf", "ratelimit", "cache")
_DESC_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _desc(word: str) -> str:
    """A Server-Timing `desc` token: decision words only, anything else dropped."""
    return "".join(c for c in word if c in _DESC_SAFE)[:32]


class DecisionTrace:
    """One request's decisions, stage by stage."""

    __slots__ = (
        "full",
        "dry_run",
        "server_timing",
        "trigger",
        "header_cap",
        "stages",
        "started",
        "cache_entered",
        "cache_started",
        "answered_by",
        "record",
    )

    def __init__(
        self,
        *,
        trigger: str,
        full: bool = True,
        dry_run: bool = False,
        server_timing: bool = False,
        header_cap: int = 4096,
    ) -> None:
        self.trigger = trigger  # token | cidr | server_timing | explain
        self.full = full  # record every detail (else only what Server-Timing needs)
        self.dry_run = dry_run
        self.server_timing = server_timing
        self.header_cap = header_cap
        self.stages: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.cache_entered = False  # the cache stage already wrote its entry (see cache.py)
        self.cache_started = 0.0  # perf_counter when the cache stage began
        self.answered_by = ""  # the stage whose decision produced the response, in a dry run
        self.record: dict[str, Any] | None = None  # set by finish()

    # --- writing ----------------------------------------------------------------------------

    def step(
        self, stage: str, decision: str, seconds: float | None = None, **details: Any
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"stage": stage, "decision": decision}
        if seconds is not None:
            entry["ms"] = _ms(seconds)
        entry.update(details)
        self.stages.append(entry)
        return entry

    def find(self, stage: str) -> dict[str, Any] | None:
        for entry in self.stages:
            if entry["stage"] == stage:
                return entry
        return None

    def note_waf(
        self,
        verdict: Verdict,
        ruleset: Ruleset,
        seconds: float,
        *,
        shadow: bool,
        body_inspected: int | None,
        body_truncated: bool,
    ) -> None:
        if not self.full:
            self.step("waf", verdict.decision, seconds)
            return
        self.step(
            "waf",
            verdict.decision,
            seconds,
            mode="shadow" if shadow else "enforce",
            score=verdict.score,
            threshold=ruleset.threshold,
            # every loaded rule is evaluated (RE2 sets skip only rules that cannot match)
            rules_evaluated=len(ruleset.rules),
            matched=[
                {
                    "id": found.rule.id,
                    "action": found.action,
                    "score": found.rule.score,
                    "target": found.target,
                    "excerpt": found.excerpt[:MAX_EXCERPT],
                }
                for found in verdict.matches
            ],
            body_inspected_bytes=body_inspected,
            body_truncated=body_truncated,
            status=verdict.status or None,
        )
        if verdict.blocked:
            self.answered_by = "waf"

    def note_ratelimit(
        self,
        rule_ids: list[str],
        bucket_keys: list[tuple[str, str]],
        limits: list[Limit],
        decision: Decision | None,
        seconds: float,
    ) -> None:
        from openflare.ratelimit.bucket import remaining, reset_seconds, retry_after

        if decision is None:
            self.step("ratelimit", "error", seconds, detail="backend did not answer")
            return
        word = "allow" if decision.admitted else "deny"
        if decision.admitted and not all(decision.allowed):
            word = "would_block"
        if not self.full:
            self.step("ratelimit", word, seconds)
            return
        rules = []
        for rule_id, key, limit, allowed, backlog in zip(
            rule_ids, bucket_keys, limits, decision.allowed, decision.backlog, strict=True
        ):
            rules.append(
                {
                    "id": rule_id,
                    "bucket": f"{key[0]}|{key[1]}",
                    "enforce": limit.enforce,
                    "allowed": allowed,
                    "burst": limit.burst,
                    "refill_per_s": round(1 / limit.interval, 6),
                    "remaining": remaining(backlog, limit),
                    "full_in_s": reset_seconds(backlog),
                    "retry_after_s": None if allowed else retry_after(backlog, limit),
                }
            )
        self.step(
            "ratelimit",
            word,
            seconds,
            spent=decision.admitted and not self.dry_run,
            rules=rules,
        )
        if not decision.admitted:
            self.answered_by = "ratelimit"

    def note_refusal(self, stage: str, status: int, reason: str, **details: Any) -> None:
        """`limits` or `normalize` refused the request: the trace's last stage entry (details
        that are None are left out)."""
        kept = {name: value for name, value in details.items() if value is not None}
        self.step(stage, "refuse", status=status, reason=reason, **kept)
        self.answered_by = stage

    def note_route(self, route: Route | None) -> None:
        if route is None:
            self.step("route", "no_route")
            self.answered_by = "route"
            return
        self.step("route", route.id, upstream=route.upstream, path_prefix=route.path_prefix)

    def note_upstream(
        self, upstream: str, target: str, attempts: int, seconds: float, response: UpstreamResponse
    ) -> None:
        if self.full:
            self.step(
                "upstream",
                "forwarded",
                seconds,
                upstream=upstream,
                target=target,
                attempts=attempts,
                status=response.status,
            )

    # --- reading ----------------------------------------------------------------------------

    def snapshot(self, exchange: Exchange) -> dict[str, Any]:
        """The record as it stands (final once `finish` ran)."""
        if self.record is not None:
            return self.record
        return self._assemble(exchange, None)

    def finish(self, exchange: Exchange, status: int | None) -> dict[str, Any]:
        self.record = self._assemble(exchange, status)
        return self.record

    def _assemble(self, exchange: Exchange, status: int | None) -> dict[str, Any]:
        route = exchange.route
        request = exchange.request
        cache = self.find("cache")
        if cache is not None and "status" not in cache and exchange.cache_status:
            cache["status"] = exchange.cache_status  # the response started before cache returned
        return {
            "request_id": exchange.request_id,
            "time": utc_timestamp(),
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "request": {
                "method": exchange.method,
                "host": exchange.host[:MAX_TARGET],  # unchecked yet when limits refuse
                "target": request.raw_path[:MAX_TARGET],
                "path": exchange.path or None,
                "query": exchange.query[:MAX_TARGET] or None,
                "client_ip": exchange.client_ip,
            },
            "route": route.id if route is not None else None,
            "upstream": route.upstream if route is not None else None,
            "stages": self.stages,
            "response": {
                "status": status,
                "cache": exchange.cache_status or None,
                "upstream_status": exchange.upstream_status or None,
                "upstream_ms": exchange.upstream_ms if exchange.upstream_ms >= 0 else None,
                "error": exchange.error or None,
            },
            "total_ms": _ms(time.perf_counter() - self.started),
        }

    def server_timing_value(self, exchange: Exchange) -> str:
        """`waf;dur=0.08;desc=pass, ratelimit;dur=0.02;desc=allow, cache;dur=0.3;desc=HIT,
        upstream;dur=12.4`: stages that did work, in order."""
        parts: list[str] = []
        for entry in self.stages:
            stage = entry["stage"]
            if stage not in TIMED_STAGES:
                continue
            word = exchange.cache_status if stage == "cache" else entry["decision"]
            ms = entry.get("ms")
            if ms is None and stage == "cache":  # still inside the cache stage (a fetch)
                spent = time.perf_counter() - self.cache_started
                ms = max(0.0, _ms(spent) - max(exchange.upstream_ms, 0.0))
            dur = f";dur={ms:.2f}" if ms is not None else ""
            parts.append(f"{stage}{dur};desc={_desc(word or entry['decision'])}")
        if exchange.upstream_ms >= 0:
            parts.append(f"upstream;dur={exchange.upstream_ms:.2f}")
        return ", ".join(parts)

    def apply_headers(self, exchange: Exchange, headers: CIMultiDict[str]) -> None:
        """Called by `Exchange.finalize_headers` just before the status line goes out."""
        if self.server_timing:
            value = self.server_timing_value(exchange)
            if value:
                headers.add(SERVER_TIMING_HEADER, value)
        if self.full and not self.dry_run:
            headers[TRACE_HEADER] = encode_trace_header(self.snapshot(exchange), self.header_cap)


def _dumps(value: Any) -> str:
    # ASCII only (a header value), compact; `default=str` for the odd non-JSON value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)


def encode_trace_header(record: dict[str, Any], cap: int) -> str:
    """The trace as compact JSON of at most `cap` characters. Too long: each stage cut to its
    decision and duration, then to the request id alone; `"truncated": true` says so and
    `"full"` names where the whole trace is (the admin API's ring buffer)."""
    text = _dumps(record)
    if len(text) <= cap:
        return text
    request_id = record.get("request_id", "")
    brief = {
        "request_id": request_id,
        "truncated": True,
        "full": f"/admin/trace/{request_id}",
        "route": record.get("route"),
        "stages": [
            {key: entry[key] for key in ("stage", "decision", "ms") if key in entry}
            for entry in record.get("stages", [])
        ],
    }
    text = _dumps(brief)
    if len(text) <= cap:
        return text
    return _dumps({"request_id": request_id, "truncated": True, "full": brief["full"]})


# --- the stages ------------------------------------------------------------------------------


def _in_networks(
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], ip: object
) -> bool:
    """Never raises: anything that is not an IP address (None, '', 'unknown', a hostname, a
    scoped or malformed address) is outside every network."""
    if not isinstance(ip, str) or not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class ExplainStage:
    """Decides, once per request and before `limits`, whether a live request is traced (admin
    token in the trace header, or a client IP in `trace_cidrs`); a traced request's trace is
    finished and kept in the ring buffer on the way out. Being this early, a request refused
    by `limits` or `normalize` is traced too (their refusal is the trace's last entry); the
    decision needs only the client IP (from `request_id`) and one header lookup, and a bad
    value of either means "not traced", never an error."""

    __slots__ = (
        "_token_header",
        "_admin_token",
        "_in_trace_cidrs",
        "_state",
        "_failures",
        "_log",
        "_header_cap",
        "_failure_limit",
        "_failure_window",
    )

    def __init__(
        self,
        *,
        token_header: str | None,
        admin_token: str | None,
        trace_cidrs: tuple[str, ...],
        state: TraceState,
        failures: AuthFailures,
        header_cap: int,
        failure_limit: int,
        failure_window: float,
        log: LogWriter | None = None,
    ) -> None:
        self._token_header = token_header if admin_token else None
        self._admin_token = admin_token
        networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trace_cidrs)
        self._in_trace_cidrs = (
            functools.lru_cache(maxsize=4096)(functools.partial(_in_networks, networks))
            if networks
            else None
        )
        self._state = state
        self._failures = failures  # shared with the admin listener (Deps.auth_failures)
        self._log = log
        self._header_cap = header_cap
        self._failure_limit = failure_limit
        self._failure_window = failure_window

    def _trigger(self, exchange: Exchange) -> str:
        """ "token", "cidr", or "" for a request that is not traced (also for any input the
        decision cannot read: tracing never turns a request into a 500)."""
        try:
            return self._decide(exchange)
        except Exception:
            return ""

    def _decide(self, exchange: Exchange) -> str:
        if self._token_header is not None:
            offered = exchange.request.headers.get(self._token_header)
            if offered is not None:
                failures = self._failures
                client = exchange.client_ip
                limit, window = self._failure_limit, self._failure_window
                if failures.retry_after(client, limit, window):
                    return ""  # locked out: not even the right token counts
                if secret_matches(offered, self._admin_token):
                    return "token"
                if limit > 0:
                    count = failures.failed(client, window)
                    if count == limit and self._log is not None:
                        self._log.event(
                            "warning",
                            "admin_auth_locked",
                            client_ip=client,
                            failures=count,
                            window_ms=round(window * 1000),
                            via="trace_header",
                        )
        if self._in_trace_cidrs is not None and self._in_trace_cidrs(exchange.client_ip):
            return "cidr"
        return ""

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        trigger = self._trigger(exchange)
        if not trigger:
            return await next(exchange)
        trace = DecisionTrace(trigger=trigger, header_cap=self._header_cap)
        exchange.trace = trace
        status: int | None = None
        try:
            response = await next(exchange)
            status = response.status
            return response
        finally:
            if status is None and exchange.response is not None:
                status = exchange.response.status
            self._state.buffer.add(exchange.request_id, trace.finish(exchange, status))


class ServerTimingStage:
    """After `normalize` (the route needs the normalized path): `Server-Timing` for a request
    whose route has `server_timing: true` — a timing-only trace, or the switch on the full
    trace the `explain` stage already made."""

    __slots__ = ("_router",)

    def __init__(self, router: Router) -> None:
        self._router = router

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        route = self._router.select(exchange.host, exchange.path)
        if route is not None and route.server_timing:
            trace = exchange.trace
            if trace is None:
                exchange.trace = DecisionTrace(
                    trigger="server_timing", full=False, server_timing=True
                )
            else:
                trace.server_timing = True
        return await next(exchange)


def build(bundle: ConfigBundle, deps: Deps) -> ExplainStage | None:
    """The `explain` stage: None (not in the chain) unless tracing of live requests is on."""
    proxy = bundle.proxy
    config = proxy.explain
    token = bundle.admin_token if proxy.admin_api.enabled else None
    if not (config.trace_enabled and (bool(token) or bool(config.trace_cidrs))):
        return None
    deps.traces.buffer.resize(config.trace_buffer_size)
    return ExplainStage(
        token_header=config.trace_header,
        admin_token=token,
        trace_cidrs=config.trace_cidrs,
        state=deps.traces,
        failures=deps.auth_failures,
        header_cap=config.trace_header_max_bytes,
        failure_limit=proxy.admin_api.auth_failure_limit,
        failure_window=proxy.admin_api.auth_failure_window_ms / 1000,
        log=deps.log,
    )


def build_server_timing(bundle: ConfigBundle, deps: Deps) -> ServerTimingStage | None:
    """The `server_timing` stage: None unless some route has `server_timing: true`."""
    routing = bundle.proxy.routing
    if not (routing.default_server_timing or any(r.server_timing for r in routing.routes)):
        return None
    return ServerTimingStage(Router(routing))


# --- the dry run's end of the chain ----------------------------------------------------------


class DryRunTerminal:
    """Ends the explain chain where `forward` would contact the origin: says what would be
    sent where, and sends nothing."""

    __slots__ = ("_targets",)

    def __init__(self, bundle: ConfigBundle) -> None:
        self._targets = {u.name: u.targets for u in bundle.proxy.upstreams}

    async def __call__(self, exchange: Exchange) -> web.StreamResponse:
        trace = exchange.trace
        route = exchange.route
        if trace is not None and route is not None:
            query = "?" + exchange.query if exchange.query else ""
            trace.step(
                "upstream",
                "would_forward",
                upstream=route.upstream,
                targets=list(self._targets.get(route.upstream, ())),
                url_path=exchange.path + query,
            )
            trace.answered_by = "origin"
        return web.Response(status=200)  # never sent: the origin's answer is not known
