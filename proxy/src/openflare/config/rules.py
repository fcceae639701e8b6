"""The rule files: WAF (`rules.waf.yaml`), cache (`cache-rules.yaml`), rate limits
(`rate-limit.yaml`), in the shape of the original proof of concept.

Strict like the main file: unknown keys, duplicate ids and patterns RE2 cannot compile are
config errors naming the rule. Every regex is compiled with google-re2 (linear time); Python's
`re` never touches request data.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

import re2
from pydantic import Field, field_validator, model_validator

from openflare.config.models import NAME_PATTERN, Location, StrictModel

HTTP_METHOD_PATTERN = r"^[A-Z][A-Z0-9-]{0,19}$"


def re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # errors become config errors, not lines on stderr
    return options


def check_re2(pattern: str) -> str:
    try:
        re2.compile(pattern, re2_options())
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"RE2 cannot compile {pattern!r}: {detail}") from None
    return pattern


def check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP or CIDR: {exc}") from None
    return value


def duplicate_id_errors(section: str, ids: list[str]) -> list[tuple[Location, str]]:
    seen: set[str] = set()
    errors: list[tuple[Location, str]] = []
    for index, rule_id in enumerate(ids):
        if rule_id in seen:
            errors.append(((section, index, "id"), f"duplicate rule id {rule_id!r}"))
        seen.add(rule_id)
    return errors


class RuleWithId(StrictModel):
    id: str = Field(pattern=NAME_PATTERN)


class RuleFile(StrictModel):
    rules: tuple[RuleWithId, ...] = ()


# --- WAF -------------------------------------------------------------------------------------


class WafCondition(StrictModel):
    """One condition: exactly one of these keys."""

    path_regex: str | None = None
    query_regex: str | None = None
    body_regex: str | None = None
    header_regex: str | None = Field(None, description='"Header-Name: value-regex"')
    header_name: str | None = None
    ip_cidr: str | None = None
    method: str | None = None
    user_agent_regex: str | None = None
    content_type: str | None = None

    @field_validator("path_regex", "query_regex", "body_regex", "user_agent_regex")
    @classmethod
    def _re2(cls, value: str | None) -> str | None:
        return None if value is None else check_re2(value)

    @field_validator("header_regex")
    @classmethod
    def _header_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, sep, pattern = value.partition(":")
        if not sep or not name.strip():
            raise ValueError('must be "Header-Name: value-regex"')
        check_re2(pattern.strip())
        return value

    @field_validator("ip_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        return None if value is None else check_cidr(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> WafCondition:
        present = [k for k, v in self.model_dump().items() if v is not None]
        if len(present) != 1:
            raise ValueError(f"a condition needs exactly one key, got {present or 'none'}")
        return self


class WafMatch(StrictModel):
    any: tuple[WafCondition, ...] = Field(min_length=1)


class WafAction(StrictModel):
    type: Literal["block", "log", "allow", "bypass_cache"]
    status_code: int = Field(403, ge=400, le=599)


class WafRule(RuleWithId):
    enabled: bool = True
    phase: Literal["request", "request_headers", "request_body"] = "request"
    description: str = ""
    match: WafMatch
    action: WafAction


class WafRules(RuleFile):
    mode: Literal["enforce", "shadow"] = "enforce"
    rules: tuple[WafRule, ...] = ()


# --- cache -----------------------------------------------------------------------------------


class CacheDecision(StrictModel):
    eligible: bool = True
    ttl_seconds: int | None = Field(None, ge=0)


class CacheRule(RuleWithId):
    path_prefix: str | None = None
    path_exact: str | None = None
    path_regex: str | None = None
    methods: tuple[str, ...] = ("GET", "HEAD")
    cache: CacheDecision = CacheDecision()

    @field_validator("path_regex")
    @classmethod
    def _re2(cls, value: str | None) -> str | None:
        return None if value is None else check_re2(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for method in value:
            if method not in ("GET", "HEAD"):
                raise ValueError(f"only GET and HEAD are cacheable, got {method!r}")
        return value

    @model_validator(mode="after")
    def _one_matcher(self) -> CacheRule:
        given = [k for k in ("path_prefix", "path_exact", "path_regex") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"needs exactly one of path_prefix, path_exact, path_regex, got {given or 'none'}"
            )
        return self


class CacheRules(RuleFile):
    rules: tuple[CacheRule, ...] = ()


# --- rate limits -----------------------------------------------------------------------------


class RateLimitRule(RuleWithId):
    key: Literal["ip", "ip_path", "api_key"] = "ip"
    path_prefix: str = "/"
    rate: float = Field(gt=0, description="tokens per second")
    burst: int = Field(ge=1)
    enabled: bool = True


class RateLimitExemptions(StrictModel):
    cidrs: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_cidr(v) for v in value)


class RateLimitRules(RuleFile):
    rules: tuple[RateLimitRule, ...] = ()
    exemptions: RateLimitExemptions = RateLimitExemptions()


def rule_reference_errors(rules: RuleFile) -> list[tuple[Location, str]]:
    return duplicate_id_errors("rules", [rule.id for rule in rules.rules])
