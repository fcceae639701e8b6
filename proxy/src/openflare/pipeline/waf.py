"""Stage 6 — the web application firewall.

Built once per runtime from `rule_files.waf` (already compiled by the loader: see
waf/compile.py). Per request: read the body's inspection window when a loaded rule looks at
bodies (`security.max_body_inspect_bytes`; the forward stage sends that prefix and streams the
rest, so the origin always gets the intact body), evaluate (waf/engine.py), then answer 403 (or
the rule's status) with a JSON or HTML body, or pass. Every decision is counted in
`openflare_waf_decisions_total{rule_id,action}`, written as one `waf` audit event, and summed
up in the access log's `waf` field. Shadow mode — file, route or rule — never blocks.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from openflare.pipeline.base import Exchange, Handler, plain_error
from openflare.pipeline.stored_response import RenderedResponse
from openflare.routing import Router
from openflare.waf.engine import DETECTION_ACTIONS, RuleMatch, Verdict, evaluate
from openflare.waf.targets import Inspection

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics
    from openflare.waf.compile import Ruleset

OVERSIZE_RULE = "waf-body-oversize"
BLOCK_MESSAGE = "Request blocked by the web application firewall"
HTML_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


def wants_html(accept: str) -> bool:
    """HTML only for clients that ask for it ahead of JSON (browsers); JSON otherwise."""
    if "text/html" not in accept:
        return False
    json_at = accept.find("application/json")
    return json_at < 0 or accept.find("text/html") < json_at


def block_response(exchange: Exchange, status: int, rule_ids: list[str]) -> RenderedResponse:
    """The refusal: request id and rule ids, never a pattern or the matched value."""
    if wants_html(exchange.request.headers.get("Accept", "")):
        ids = html.escape(", ".join(rule_ids))
        body = (
            "<!doctype html><html><head><meta charset=utf-8><title>Forbidden</title></head>"
            f"<body><h1>{status} Forbidden</h1><p>{BLOCK_MESSAGE}.</p>"
            f"<p>Request ID: <code>{html.escape(exchange.request_id)}</code><br>"
            f"Rules: <code>{ids}</code></p></body></html>\n"
        )
        return RenderedResponse(status, body.encode(), HTML_HEADERS)
    payload = {
        "error": "forbidden",
        "status": status,
        "message": BLOCK_MESSAGE,
        "request_id": exchange.request_id,
        "rule_ids": rule_ids,
    }
    return RenderedResponse(status, orjson.dumps(payload), JSON_HEADERS)


class WafStage:
    __slots__ = (
        "_ruleset",
        "_log",
        "_metrics",
        "_latency",
        "_inspect_limit",
        "_read_timeout",
        "_router",
        "_threshold",
    )

    def __init__(
        self,
        ruleset: Ruleset,
        log: LogWriter,
        metrics: Metrics,
        inspect_limit: int,
        read_timeout: float,
        router: Router | None,
    ) -> None:
        self._ruleset = ruleset
        self._log = log
        self._metrics = metrics
        self._latency = metrics.stage_latency("waf")
        self._inspect_limit = inspect_limit
        self._read_timeout = read_timeout
        self._router = router
        self._threshold = ruleset.threshold

    def _route_mode(self, exchange: Exchange) -> tuple[bool, bool]:
        """(enabled, shadow) for the route the request will take."""
        if self._router is None:
            return True, False
        route = self._router.select(exchange.host, exchange.path)
        if route is None:
            return True, False
        mode, enabled = self._ruleset.routes.get(route.id, (None, True))
        return enabled, mode == "shadow"

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        ruleset = self._ruleset
        enabled, route_shadow = self._route_mode(exchange)
        if not enabled:
            return await next(exchange)
        request = exchange.request
        body: bytes | None = None
        truncated = False
        has_body = request.body_exists
        declared = request.content_length if has_body else None  # (parsed only when needed)
        if has_body and ruleset.needs_body:
            limit = self._inspect_limit
            if limit > 0:
                try:
                    prefix = await exchange.read_body_prefix(limit + 1, self._read_timeout)
                except TimeoutError:
                    self._metrics.reject("waf", "body_read_timeout")
                    exchange.error = "body_read_timeout"
                    response = plain_error(exchange, 408, "Request Timeout")
                    response.force_close()
                    return response
                truncated = len(prefix) > limit
                body = prefix[:limit] if truncated else prefix
            else:
                truncated = True
        started = time.monotonic()
        inspection = Inspection(
            method=exchange.method,
            raw_target=request.raw_path,
            path=exchange.path,
            query=exchange.query,
            headers=tuple(request.headers.items()),
            client_ip=exchange.client_ip,
            body=body,
            body_size=declared if declared is not None else len(body or b""),
            truncated=truncated,
            limits=ruleset.limits,
        )
        verdict = evaluate(ruleset, inspection, route_shadow=route_shadow)
        if truncated and ruleset.oversize == "reject":
            verdict = self._oversize(verdict, route_shadow)
        elapsed = time.monotonic() - started
        self._latency.observe(elapsed)
        if exchange.trace is not None:
            exchange.trace.note_waf(
                verdict,
                ruleset,
                elapsed,
                shadow=ruleset.mode == "shadow" or route_shadow,
                body_inspected=None if body is None else len(body),
                body_truncated=truncated,
            )
        if verdict.matches:
            self._record(exchange, verdict, route_shadow)
        if verdict.blocked:
            if verdict.matches and verdict.matches[-1].rule.id == OVERSIZE_RULE:
                response = plain_error(exchange, 413, "Content Too Large (WAF inspection limit)")
            else:
                ids = [m.rule.id for m in verdict.matches if m.action == "block"]
                response = block_response(exchange, verdict.status, ids)
            if has_body:
                response.force_close()  # the unread rest of the body is not worth reading
            return response
        if verdict.bypass_cache:
            exchange.cache_bypass = True
        return await next(exchange)

    def _oversize(self, verdict: Verdict, route_shadow: bool) -> Verdict:
        from openflare.waf.compile import Rule

        rule = Rule(
            index=-1,
            id=OVERSIZE_RULE,
            action="block",
            status=413,
            score=0,
            shadow=self._ruleset.mode == "shadow",
            paranoia=1,
            tags=("protocol",),
            any=(),
            all=(),
        )
        shadow = rule.shadow or route_shadow
        matches = list(verdict.matches)
        found = RuleMatch(rule, "body_size", "", "would_block" if shadow else "block")
        matches.append(found)
        if shadow or verdict.blocked:
            decision = verdict.decision if verdict.blocked else "would_block"
            if verdict.blocked:
                found.action = "log"
            return Verdict(decision, verdict.status, verdict.score, matches, verdict.bypass_cache)
        return Verdict("block", 413, verdict.score, matches, verdict.bypass_cache)

    def _record(self, exchange: Exchange, verdict: Verdict, route_shadow: bool) -> None:
        metrics = self._metrics
        by_action: dict[str, list[str]] = {}
        details: list[dict[str, Any]] = []
        for found in verdict.matches:
            rule = found.rule
            metrics.waf_decision(rule.id, found.action)
            by_action.setdefault(found.action, []).append(rule.id)
            details.append(
                {
                    "id": rule.id,
                    "action": found.action,
                    "target": found.target,
                    "excerpt": found.excerpt,
                    "score": rule.score,
                    "tags": list(rule.tags),
                }
            )
        decision = verdict.decision
        exchange.waf = f"{decision}:" + ",".join(by_action.get(decision, verdict.rule_ids))
        shadow = self._ruleset.mode == "shadow" or route_shadow
        self._log.event(
            "warning" if decision == "block" else "info",
            "waf",
            request_id=exchange.request_id,
            decision=decision,
            status=verdict.status or None,
            mode="shadow" if shadow else "enforce",
            score=verdict.score,
            threshold=self._threshold,
            rules=details,
            client_ip=exchange.client_ip,
            method=exchange.method,
            path=exchange.path[:256],
        )


def decision_series(ruleset: Ruleset) -> list[tuple[str, str]]:
    """Every `(rule_id, action)` `_record` can count for this ruleset (waf/engine.py `decide`;
    a route in shadow mode turns block into would_block, a match below the threshold is log).
    Label values come only from the configured rule ids."""
    series: dict[tuple[str, str], None] = {}
    rules = [*ruleset.allow_rules, *ruleset.rules]
    for rule in rules:
        if rule.action == "allow":
            actions: tuple[str, ...] = ("allow",)
        elif rule.action == "bypass_cache":
            actions = ("log",) if rule.shadow else ("bypass_cache", "log")
        elif rule.action in DETECTION_ACTIONS:
            actions = ("would_block", "log") if rule.shadow else ("block", "would_block", "log")
        else:
            actions = ("log",)
        series.update(((rule.id, action), None) for action in actions)
    if ruleset.oversize == "reject":
        shadow = ruleset.mode == "shadow"
        actions = ("would_block", "log") if shadow else ("block", "would_block", "log")
        series.update(((OVERSIZE_RULE, action), None) for action in actions)
    return list(series)


def build(bundle: ConfigBundle, deps: Deps) -> WafStage | None:
    ruleset = bundle.waf.compiled
    if ruleset.empty:
        return None
    deps.metrics.waf_rules(decision_series(ruleset))  # each series at 0 from the start
    router = Router(bundle.proxy.routing) if ruleset.routes else None
    return WafStage(
        ruleset,
        deps.log,
        deps.metrics,
        bundle.proxy.security.max_body_inspect_bytes,
        bundle.proxy.server.read_timeout_ms / 1000,
        router,
    )
