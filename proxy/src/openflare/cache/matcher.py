"""Cache rules compiled once per runtime: the first rule that matches a path decides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import re2

from openflare.cache.key import DEFAULT_KEY_POLICY, KeyPolicy
from openflare.cache.rules import CacheRule, CacheRules
from openflare.config.models import CacheConfig
from openflare.config.rules import re2_options


@dataclass(frozen=True, slots=True)
class RuleSettings:
    rule_id: str | None
    eligible: bool
    ttl: int | None  # applies to responses without explicit freshness (or always, see below)
    origin_wins: bool  # False: `ttl` replaces the origin's own freshness
    stale_while_revalidate: int
    stale_if_error: int
    store_set_cookie: bool
    bypass_on_cookie: bool
    bypass_on_authorization: bool  # False: RFC 9111 §3.5 decides per response
    cookies_allowed: frozenset[str]
    key: KeyPolicy


MATCH_MEMO_MAX = 4096  # (method, path) → settings remembered; dropped whole when full


class CacheRuleMatcher:
    __slots__ = ("_rules", "_default", "_memo")

    def __init__(self, rules: CacheRules, config: CacheConfig) -> None:
        self._default = RuleSettings(
            rule_id=None,
            eligible=True,
            ttl=None,  # no rule: every decision comes from the origin's headers
            origin_wins=True,
            stale_while_revalidate=config.default_stale_while_revalidate_seconds,
            stale_if_error=config.default_stale_if_error_seconds,
            store_set_cookie=not config.never_store_on_set_cookie,
            bypass_on_cookie=config.bypass_on_cookie,
            bypass_on_authorization=config.bypass_on_authorization,
            cookies_allowed=frozenset(),
            key=DEFAULT_KEY_POLICY,
        )
        self._rules = tuple(
            (self._matcher(rule), frozenset(rule.methods), self._settings(rule, config))
            for rule in rules.rules
        )
        # the decision is a pure function of (method, path) for one runtime's rules: a popular
        # path pays the rule scan (and its RE2 searches) once, not on every request
        self._memo: dict[tuple[str, str], RuleSettings] = {}

    @staticmethod
    def _matcher(rule: CacheRule) -> Callable[[str], bool]:
        if rule.path_exact is not None:
            exact = rule.path_exact
            return lambda path: path == exact
        if rule.path_prefix is not None:
            prefix = rule.path_prefix
            return lambda path: path.startswith(prefix)
        assert rule.path_regex is not None
        search = re2.compile(rule.path_regex, re2_options()).search
        return lambda path: search(path) is not None

    @staticmethod
    def _settings(rule: CacheRule, config: CacheConfig) -> RuleSettings:
        decision = rule.cache
        ttl = decision.ttl_seconds
        if ttl is None and config.default_ttl_seconds > 0:
            ttl = config.default_ttl_seconds
        return RuleSettings(
            rule_id=rule.id,
            eligible=decision.eligible,
            ttl=ttl,
            origin_wins=decision.origin_wins and config.respect_origin_cache_control,
            stale_while_revalidate=(
                decision.stale_while_revalidate_seconds
                if decision.stale_while_revalidate_seconds is not None
                else config.default_stale_while_revalidate_seconds
            ),
            stale_if_error=(
                decision.stale_if_error_seconds
                if decision.stale_if_error_seconds is not None
                else config.default_stale_if_error_seconds
            ),
            store_set_cookie=decision.store_set_cookie or not config.never_store_on_set_cookie,
            bypass_on_cookie=(
                decision.bypass_on_cookie
                if decision.bypass_on_cookie is not None
                else config.bypass_on_cookie
            ),
            bypass_on_authorization=(
                decision.bypass_on_authorization
                if decision.bypass_on_authorization is not None
                else config.bypass_on_authorization
            ),
            cookies_allowed=frozenset(decision.cookie_allowlist) | frozenset(decision.key.cookies),
            key=KeyPolicy(
                ignore_query=decision.key.ignore_query,
                only_query=decision.key.only_query,
                headers=decision.key.headers,
                cookies=decision.key.cookies,
            ),
        )

    def match(self, path: str, method: str) -> RuleSettings:
        key = (method, path)
        memo = self._memo
        found = memo.get(key)
        if found is not None:
            return found
        found = self._scan(path, method)
        if len(path) <= 1024:
            if len(memo) >= MATCH_MEMO_MAX:
                memo.clear()
            memo[key] = found
        return found

    def _scan(self, path: str, method: str) -> RuleSettings:
        for matches, methods, settings in self._rules:
            if method in methods and matches(path):
                return settings
        return self._default
