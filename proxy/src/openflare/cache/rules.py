"""The cache rule file (`configs/cache-rules.yaml`): per-path eligibility and TTL."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from openflare.config.models import StrictModel
from openflare.config.rules import RuleFile, RuleWithId, check_re2


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
