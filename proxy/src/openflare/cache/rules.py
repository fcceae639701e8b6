"""The cache rule file (`configs/cache-rules.yaml`): per-path eligibility, TTL and key control.

The original shape (`id`, one of `path_prefix|path_exact|path_regex`, `methods`,
`cache: {eligible, ttl_seconds}`) still loads; the other keys under `cache:` are additions.
The first rule that matches a request decides; a request no rule matches is cached purely by
the origin's headers (RFC 9111), with no default TTL.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from openflare.config.models import StrictModel
from openflare.config.rules import RuleFile, RuleWithId, check_re2


class CacheKeyConfig(StrictModel):
    ignore_query: tuple[str, ...] = Field((), description="params left out of the key; `utm_*`")
    only_query: tuple[str, ...] | None = Field(None, description="keep only these params")
    headers: tuple[str, ...] = Field((), description="request headers added to the key")
    cookies: tuple[str, ...] = Field((), description="cookie values added to the key")


class CacheDecision(StrictModel):
    eligible: bool = True
    ttl_seconds: int | None = Field(None, ge=0, description="for responses without freshness")
    origin_wins: bool = Field(True, description="origin freshness headers beat ttl_seconds")
    stale_while_revalidate_seconds: int | None = Field(None, ge=0)
    stale_if_error_seconds: int | None = Field(None, ge=0)
    store_set_cookie: bool = Field(False, description="store, minus Set-Cookie, when present")
    bypass_on_cookie: bool | None = Field(None, description="None: the global cache setting")
    bypass_on_authorization: bool | None = Field(None, description="None: the global setting")
    cookie_allowlist: tuple[str, ...] = Field((), description="cookies that do not cause bypass")
    key: CacheKeyConfig = CacheKeyConfig()


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
