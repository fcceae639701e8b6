"""The rate-limit rule file (`configs/rate-limit.yaml`): token-bucket rules and exemptions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from openflare.config.models import StrictModel
from openflare.config.rules import RuleFile, RuleWithId, check_cidr


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
