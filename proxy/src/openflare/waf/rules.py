"""The WAF rule file (`configs/rules.waf.yaml`): global mode and rules in the original shape."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from openflare.config.models import StrictModel
from openflare.config.rules import RuleFile, RuleWithId, check_cidr, check_re2


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
