"""The rate-limit rule file (`configs/rate-limit.yaml`): token-bucket rules, exemptions and the
backend that holds the buckets.

The original shape (`rules[]` with `id`, `key: ip|ip_path|api_key`, `path_prefix`, `rate`,
`burst`, `enabled`; `exemptions: {cidrs, paths}`) loads unchanged. Added since: `period`,
`methods`, `key: header:<Name>`, `cidr` aggregation, per-rule `mode` and `on_backend_error`,
`response_headers`, and the file-level `mode`, `backend`, `on_backend_error` and
`response_headers` defaults. See docs/09-rate-limiting.md.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from openflare.config.models import StrictModel
from openflare.config.rules import HTTP_METHOD_PATTERN, RuleFile, RuleWithId, check_cidr

# An HTTP field name (RFC 9110 token), for `key: header:<Name>`.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
PERIOD_SECONDS = {"second": 1.0, "minute": 60.0}
API_KEY_HEADER = "X-API-Key"

Mode = Literal["enforce", "shadow"]
OnBackendError = Literal["allow", "deny"]


def check_path_prefix(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must start with /")
    return value


class CidrAggregation(StrictModel):
    """Clients in one network share a bucket: an IPv6 host usually owns a whole /64."""

    ipv4_prefix: int = Field(32, ge=0, le=32)
    ipv6_prefix: int = Field(64, ge=0, le=128)


class RateLimitRule(RuleWithId):
    key: str = Field("ip", description="ip | ip_path | api_key | header:<Name>")
    path_prefix: str = "/"
    methods: tuple[str, ...] = Field((), description="upper-case methods; empty = every method")
    rate: float = Field(gt=0, le=1e9, description="tokens added per period")
    period: Literal["second", "minute"] = "second"
    burst: int = Field(ge=1, le=1_000_000_000, description="bucket size")
    enabled: bool = True
    mode: Mode = "enforce"
    cidr: CidrAggregation = CidrAggregation()
    on_backend_error: OnBackendError | None = Field(None, description="default: the file's")
    response_headers: bool | None = Field(None, description="default: the file's")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if value in ("ip", "ip_path", "api_key"):
            return value
        name = value.removeprefix("header:")
        if name != value and HEADER_NAME_RE.match(name):
            return value
        raise ValueError(f"key must be ip, ip_path, api_key or header:<Name>, not {value!r}")

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_path_prefix(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for method in value:
            if not re.match(HTTP_METHOD_PATTERN, method):
                raise ValueError(f"{method!r} is not an upper-case HTTP method")
        return value

    @property
    def header_name(self) -> str | None:
        """The request header whose value is the key (`api_key` reads X-API-Key)."""
        if self.key == "api_key":
            return API_KEY_HEADER
        return self.key.removeprefix("header:") if self.key.startswith("header:") else None

    @property
    def interval(self) -> float:
        """Seconds per token."""
        return PERIOD_SECONDS[self.period] / self.rate


class RateLimitExemptions(StrictModel):
    cidrs: tuple[str, ...] = ()
    paths: tuple[str, ...] = Field((), description="path prefixes that are never limited")

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_cidr(v) for v in value)

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_path_prefix(v) for v in value)


class RedisBackendConfig(StrictModel):
    url: str = Field(description="redis://[user:password@]host:port/db, rediss://, unix://")
    key_prefix: str = Field("openflare:rl:", max_length=64)
    connect_timeout_ms: int = Field(200, gt=0, le=60_000, description="a new connection")
    timeout_ms: int = Field(100, gt=0, le=60_000, description="the script's round trip")
    max_connections: int = Field(64, ge=1, le=10_000)
    retry_interval_ms: int = Field(
        500, ge=0, le=600_000, description="after a failure, skip Redis this long, then probe"
    )
    error_log_interval_s: float = Field(10.0, gt=0, description="at most one error line per")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class BackendConfig(StrictModel):
    type: Literal["local", "redis"] = "local"
    max_keys: int = Field(100_000, ge=1, description="local: most buckets kept in memory")
    redis: RedisBackendConfig | None = None

    @model_validator(mode="after")
    def _redis_needs_url(self) -> BackendConfig:
        if self.type == "redis" and self.redis is None:
            raise ValueError("type redis needs a redis: {url: ...} section")
        return self


class RateLimitRules(RuleFile):
    mode: Mode = Field("enforce", description="shadow turns every rule into shadow")
    backend: BackendConfig = BackendConfig()
    on_backend_error: OnBackendError = "allow"
    response_headers: bool = Field(False, description="IETF RateLimit / RateLimit-Policy")
    rules: tuple[RateLimitRule, ...] = ()
    exemptions: RateLimitExemptions = RateLimitExemptions()
