"""Stage 7 — rate limiting (429).

Rules come from `rule_files.rate_limit` and are compiled once per runtime: sorted most specific
first (longest `path_prefix`, then rules that name methods, then file order), limits and IETF
policy strings precomputed, metric children bound. Per request: exempt paths and client CIDRs
pass untouched; every enabled rule whose prefix and methods match is checked in one backend call
(bucket.decide: check all, then commit — a request denied by one rule spends no token of the
others). The client is the proxy's one resolved `client_ip` (request_id stage), aggregated to
the rule's `cidr` prefix, or the value of a header (`api_key`, `header:<Name>`; a request
without it is keyed by its IP).

A denial by an enforcing rule answers 429 with a JSON body and `Retry-After` from the bucket;
shadow rules never block, they count `would_block`. When the backend cannot answer, each rule
counts `error` and the request passes unless an enforcing rule says `on_backend_error: deny`,
which answers 503. See docs/09-rate-limiting.md.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from openflare.pipeline.base import Exchange, Handler, answered
from openflare.pipeline.stored_response import RenderedResponse
from openflare.ratelimit.bucket import (
    Decision,
    Limit,
    policy_window,
    remaining,
    reset_seconds,
    retry_after,
)
from openflare.ratelimit.memory import MemoryBackend
from openflare.ratelimit.rules import PERIOD_SECONDS

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.ratelimit.base import BucketKey, RateLimitBackend
    from openflare.ratelimit.rules import RateLimitRule, RateLimitRules

MAX_PLAIN_PATH = 256  # longer paths (ip_path keys) are hashed: bounded bytes per key


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The parsed client address; IPv4-mapped IPv6 counts as IPv4."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=16_384)
def aggregate_ip(ip: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The bucket identity of a client address: the address itself, or its network
    (`2001:db8:1:2::/64`) when the rule aggregates."""
    address = _address(ip)
    if address is None:
        return ip
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix == address.max_prefixlen:
        return str(address)
    network = ipaddress.ip_network((address, prefix), strict=False)
    return f"{network.network_address}/{prefix}"


class CompiledRule:
    """One rule, ready for the request path."""

    __slots__ = (
        "id",
        "prefix",
        "methods",
        "limit",
        "enforce",
        "per_path",
        "header",
        "ipv4_prefix",
        "ipv6_prefix",
        "plain_ipv4",
        "deny_on_error",
        "policy",
        "counters",
        "allow_counter",
        "allow_label",
    )

    def __init__(self, rule: RateLimitRule, rules: RateLimitRules, counters: Any) -> None:
        self.id = rule.id
        self.prefix = rule.path_prefix
        self.methods = frozenset(rule.methods) or None
        self.enforce = rule.mode == "enforce" and rules.mode == "enforce"
        self.limit = Limit.of(rule.rate, rule.burst, PERIOD_SECONDS[rule.period], self.enforce)
        self.per_path = rule.key == "ip_path"
        self.header = rule.header_name  # api_key, header:<Name>
        self.ipv4_prefix = rule.cidr.ipv4_prefix
        self.ipv6_prefix = rule.cidr.ipv6_prefix
        self.plain_ipv4 = self.ipv4_prefix == 32
        on_error = rule.on_backend_error or rules.on_backend_error
        self.deny_on_error = self.enforce and on_error == "deny"
        headers = rules.response_headers if rule.response_headers is None else rule.response_headers
        # shadow rules limit nothing, so they advertise nothing
        self.policy = (
            f'"{rule.id}";q={rule.burst};w={policy_window(self.limit)}'
            if headers and self.enforce
            else None
        )
        self.counters = counters  # decision -> bound counter child
        self.allow_counter = counters["allow"]  # the common outcome, bound once
        self.allow_label = f"allow:{rule.id}"

    def identity(self, exchange: Exchange) -> str:
        if self.header is not None:
            value = exchange.request.headers.get(self.header)
            if value:
                return "k:" + _digest(value)
        ip = exchange.client_ip
        if not (self.plain_ipv4 and "." in ip and ":" not in ip):
            ip = aggregate_ip(ip, self.ipv4_prefix, self.ipv6_prefix)
        if self.per_path:
            path = exchange.path
            return f"{ip} {path if len(path) <= MAX_PLAIN_PATH else '#' + _digest(path)}"
        return ip


def compile_rules(
    rules: RateLimitRules, counters: Callable[[str], Any]
) -> tuple[CompiledRule, ...]:
    enabled = [(index, rule) for index, rule in enumerate(rules.rules) if rule.enabled]
    enabled.sort(key=lambda item: (-len(item[1].path_prefix), not item[1].methods, item[0]))
    return tuple(CompiledRule(rule, rules, counters(rule.id)) for _, rule in enabled)


def _in_networks(
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], ip: str
) -> bool:
    address = _address(ip)
    return address is not None and any(address in network for network in networks)


class RateLimitStage:
    __slots__ = (
        "_rules",
        "_headers",
        "_exempt_paths",
        "_exempt_ip",
        "_backend",
        "_latency",
        "_retry_wait",
    )

    def __init__(
        self,
        rules: tuple[CompiledRule, ...],
        exempt_paths: tuple[str, ...],
        exempt_cidrs: tuple[str, ...],
        backend: RateLimitBackend,
        latency: Any,
        retry_wait: int = 1,
    ) -> None:
        self._rules = rules
        self._headers = any(rule.policy for rule in rules)  # some rule sends RateLimit headers
        self._exempt_paths = exempt_paths
        networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in exempt_cidrs)
        self._exempt_ip: Callable[[str], bool] | None = (
            functools.lru_cache(maxsize=4096)(functools.partial(_in_networks, networks))
            if networks
            else None
        )
        self._backend = backend
        self._latency = latency
        self._retry_wait = retry_wait  # Retry-After of a 503 when the backend is down

    @property
    def waits(self) -> bool:
        """Every decision waits for the backend (Redis): no request is tried inline."""
        return self._backend.waits

    @property
    def backend(self) -> RateLimitBackend:
        return self._backend

    def __call__(self, exchange: Exchange, next: Handler) -> Awaitable[web.StreamResponse]:
        # a plain `def`: it returns `next(exchange)` unawaited (see pipeline/base.py); only a
        # decision that must wait (Redis, an explained request) runs in a coroutine
        path = exchange.path
        if path.startswith(self._exempt_paths):  # a tuple of prefixes; () matches nothing
            return next(exchange)
        method = exchange.method
        matched: list[CompiledRule] = []  # (plain loops: comprehensions cost a frame on 3.11)
        for rule in self._rules:
            if path.startswith(rule.prefix) and (rule.methods is None or method in rule.methods):
                matched.append(rule)
        if not matched:
            return next(exchange)
        if self._exempt_ip is not None and self._exempt_ip(exchange.client_ip):
            exchange.ratelimit = "exempt"
            return next(exchange)
        backend = self._backend
        if type(backend) is not MemoryBackend or exchange.trace is not None:
            return self._decide_and_pass(exchange, next, matched)
        started = perf_counter()
        keys, limits = _buckets(exchange, matched)
        decision = backend.decide_now(keys, limits)  # the local table answers at once
        self._latency.observe(perf_counter() - started)
        return self._apply(exchange, next, matched, decision)

    async def _decide_and_pass(
        self, exchange: Exchange, next: Handler, matched: list[CompiledRule]
    ) -> web.StreamResponse:
        started = perf_counter()
        keys, limits = _buckets(exchange, matched)
        if exchange.trace is None:
            decision = await self._backend.decide(keys, limits)
        else:  # traced: written down; an explain dry run only peeks (no token spent)
            decision = await self._traced_decide(exchange, matched, keys, limits, started)
        self._latency.observe(perf_counter() - started)
        return await self._apply(exchange, next, matched, decision)

    def _apply(
        self,
        exchange: Exchange,
        next: Handler,
        matched: list[CompiledRule],
        decision: Decision | None,
    ) -> Awaitable[web.StreamResponse]:
        """Act on the decision: 429, 503, or on to the next stage with the outcome noted."""
        if decision is None:
            return self._unavailable(exchange, next, matched)
        if self._headers:
            _add_headers(exchange, matched, decision)
        if not decision.admitted:
            return answered(self._deny(exchange, matched, decision))
        label = ""
        for rule, allowed in zip(matched, decision.allowed, strict=True):
            if allowed:
                rule.allow_counter.inc()
            else:  # only a shadow rule can disallow an admitted request
                rule.counters["would_block"].inc()
                label = label or f"would_block:{rule.id}"
        exchange.ratelimit = label or matched[0].allow_label
        return next(exchange)

    async def _traced_decide(
        self,
        exchange: Exchange,
        matched: list[CompiledRule],
        keys: list[BucketKey],
        limits: list[Limit],
        started: float,
    ) -> Decision | None:
        trace = exchange.trace
        assert trace is not None
        backend = self._backend
        if trace.dry_run:
            decision = await backend.peek(keys, limits)
        else:
            decision = await backend.decide(keys, limits)
        ids = [rule.id for rule in matched]
        trace.note_ratelimit(ids, keys, limits, decision, perf_counter() - started)
        return decision

    def _deny(
        self, exchange: Exchange, matched: list[CompiledRule], decision: Decision
    ) -> web.StreamResponse:
        first: CompiledRule | None = None
        wait = 1
        for rule, allowed, backlog in zip(matched, decision.allowed, decision.backlog, strict=True):
            if allowed or not rule.enforce:
                continue
            rule.counters["deny"].inc()
            first = first or rule
            wait = max(wait, retry_after(backlog, rule.limit))
        assert first is not None
        exchange.ratelimit = f"deny:{first.id}"
        exchange.error = "rate_limited"
        return _json_error(exchange, 429, "rate_limited", first.id, wait)

    def _unavailable(
        self, exchange: Exchange, next: Handler, matched: list[CompiledRule]
    ) -> Awaitable[web.StreamResponse]:
        denying: CompiledRule | None = None
        for rule in matched:
            rule.counters["error"].inc()
            if denying is None and rule.deny_on_error:
                denying = rule
        if denying is None:
            exchange.ratelimit = f"error:{matched[0].id}"
            return next(exchange)
        exchange.ratelimit = f"error:{denying.id}"
        exchange.error = "rate_limit_unavailable"
        return answered(
            _json_error(exchange, 503, "rate_limit_unavailable", denying.id, self._retry_wait)
        )


def _buckets(
    exchange: Exchange, matched: list[CompiledRule]
) -> tuple[list[BucketKey], list[Limit]]:
    """The bucket of each matched rule for this request, and its limit (same order)."""
    keys: list[BucketKey] = []
    limits: list[Limit] = []
    for rule in matched:
        keys.append((rule.id, rule.identity(exchange)))
        limits.append(rule.limit)
    return keys, limits


def _add_headers(exchange: Exchange, matched: list[CompiledRule], decision: Decision) -> None:
    """IETF draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "id";q=burst;w=secs` and
    `RateLimit: "id";r=remaining;t=secs-until-full`, one list member per enforcing rule."""
    policies: list[str] = []
    states: list[str] = []
    for rule, backlog in zip(matched, decision.backlog, strict=True):
        if rule.policy is None:
            continue
        policies.append(rule.policy)
        left = remaining(backlog, rule.limit)
        states.append(f'"{rule.id}";r={left};t={reset_seconds(backlog)}')
    if not policies:
        return
    exchange.add_response_header("RateLimit-Policy", ", ".join(policies))
    exchange.add_response_header("RateLimit", ", ".join(states))


def _json_error(
    exchange: Exchange, status: int, error: str, rule_id: str, retry: int
) -> RenderedResponse:
    return RenderedResponse(
        status,
        orjson.dumps({"error": error, "rule_id": rule_id, "request_id": exchange.request_id}),
        {
            "Content-Type": "application/json",
            "Retry-After": str(retry),
            "Cache-Control": "no-store",
        },
    )


def build(bundle: ConfigBundle, deps: Deps) -> RateLimitStage | None:
    rules = bundle.rate_limits
    metrics = deps.metrics

    def counters(rule_id: str) -> dict[str, Any]:
        family = metrics.ratelimit_decisions
        return {d: family.labels(rule_id, d) for d in ("allow", "deny", "would_block", "error")}

    compiled = compile_rules(rules, counters)
    if not compiled:
        return None
    backend = deps.ratelimit.get(rules.backend, deps.log, metrics)
    redis = rules.backend.redis
    return RateLimitStage(
        compiled,
        rules.exemptions.paths,
        rules.exemptions.cidrs,
        backend,
        metrics.stage_latency("ratelimit"),
        retry_wait=max(1, -(-redis.retry_interval_ms // 1000)) if redis else 1,
    )
