"""The main configuration file (`configs/proxy.*.yaml`), as pydantic models.

Every model is frozen and rejects unknown keys, so a typo is a config error naming the key
instead of a silently ignored setting. Keys and defaults follow the original proof of concept
(`server.listen_addr`, `upstreams[].base_url`, `cache.debug_headers`, ...) so its files still
load; keys added since are documented in docs/02-pipeline.md.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def valid_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    """`value` unchanged if every item is an IP network (host bits allowed), else a ValueError
    naming the first that is not."""
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not a CIDR: {exc}") from None
    return value


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_listen_addr(value: str) -> tuple[str, int]:
    """`":8080"` → ("0.0.0.0", 8080); `"127.0.0.1:8080"`, `"[::1]:8080"` as written."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT or :PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


class ServerConfig(StrictModel):
    listen_addr: str = ":8080"
    admin_listen_addr: str = ":8081"
    read_timeout_ms: int = Field(
        30_000, gt=0, description="max wait for each chunk of a request body"
    )
    write_timeout_ms: int = Field(
        30_000, gt=0, description="a client not reading a response for this long is cut off"
    )
    idle_timeout_ms: int = Field(60_000, gt=0, description="keep-alive idle timeout")
    header_timeout_ms: int = Field(
        10_000, gt=0, description="max time to receive a complete request head"
    )
    body_timeout_ms: int = Field(
        300_000, ge=0, description="max time to receive a whole request body (0 = no limit)"
    )
    max_connections: int = Field(
        10_000, ge=0, description="open client connections; beyond it 503 (0 = no cap)"
    )
    max_header_bytes: int = Field(32_768, ge=1024, le=1_048_576)
    max_header_count: int = Field(100, ge=8, le=1000)
    max_uri_bytes: int = Field(8_192, ge=256, le=65_536)
    graceful_shutdown_timeout_ms: int = Field(15_000, ge=0)
    shutdown_delay_ms: int = Field(
        0, ge=0, description="/readyz fails this long before listeners close"
    )
    fault_injection: bool = Field(False, description="test-only: enables /__openflare/fault/*")

    @field_validator("listen_addr", "admin_listen_addr")
    @classmethod
    def _valid_addr(cls, value: str) -> str:
        parse_listen_addr(value)
        return value


def _valid_origin_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query or fragment")
    return value.rstrip("/")


def _is_origin_url(value: object) -> bool:
    try:
        return isinstance(value, str) and bool(_valid_origin_url(value))
    except ValueError:
        return False


class UpstreamConfig(StrictModel):
    """One origin: `base_url` (a single target) or `targets` (several, balanced round-robin
    with passive health checks); after validation both are set and `base_url == targets[0]`."""

    name: str = Field(pattern=NAME_PATTERN)
    base_url: str = ""  # filled from targets[0] when only targets are given
    targets: tuple[str, ...] = ()
    connect_timeout_ms: int = Field(2_000, gt=0)
    response_header_timeout_ms: int = Field(30_000, gt=0)
    total_timeout_ms: int = Field(
        0, ge=0, description="whole upstream exchange, body included (0 = no limit)"
    )
    max_idle_conns: int = Field(1024, ge=0, description="cap on pooled connections (0 = no cap)")
    max_idle_conns_per_host: int = Field(512, ge=0)
    pass_host_header: bool = True
    max_fails: int = Field(
        3, ge=0, description="consecutive failures that eject a target (0 = never eject)"
    )
    fail_timeout_ms: int = Field(10_000, gt=0, description="how long an ejected target rests")
    retries: int = Field(
        1, ge=0, le=10, description="other targets tried for idempotent requests without a body"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_target_list(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        base, targets = data.get("base_url"), data.get("targets")
        if targets is None or (isinstance(targets, list | tuple) and not targets):
            if base is None:
                raise ValueError("set base_url (one target) or targets (a list of URLs)")
            # copied only when valid, so a bad base_url is reported once, under its own name
            return {**data, "targets": [base]} if _is_origin_url(base) else data
        if not isinstance(targets, list | tuple):
            return data  # the field validator reports the type
        if base is None:
            return {**data, "base_url": targets[0]} if _is_origin_url(targets[0]) else data
        first = targets[0]
        both_text = isinstance(base, str) and isinstance(first, str)
        if both_text and base.rstrip("/") != first.rstrip("/"):
            raise ValueError("base_url must be targets[0] when both are set (set only one)")
        return data

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: str) -> str:
        return _valid_origin_url(value)

    @field_validator("targets")
    @classmethod
    def _valid_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        urls = tuple(_valid_origin_url(url) for url in value)
        if len(set(urls)) != len(urls):
            raise ValueError("duplicate target")
        return urls


class RouteConfig(StrictModel):
    id: str = Field(pattern=NAME_PATTERN)
    host: str | None = Field(None, description="exact host, or *.suffix; none = any host")
    path_prefix: str = "/"
    upstream: str
    server_timing: bool = Field(
        False, description="add a Server-Timing header (per-stage durations) to responses"
    )

    @field_validator("path_prefix")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @field_validator("host")
    @classmethod
    def _lower_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"(\*\.)?[A-Za-z0-9.-]+(:\d+)?", value):
            raise ValueError("must be a host name or *.suffix")
        return value.lower()


class RoutingConfig(StrictModel):
    default_upstream: str | None = None
    default_server_timing: bool = Field(
        False, description="Server-Timing on responses of the default route"
    )
    routes: tuple[RouteConfig, ...] = ()


class SecurityConfig(StrictModel):
    trust_x_forwarded_for: bool = Field(False, description="trust X-Forwarded-For from every peer")
    trusted_proxies: tuple[str, ...] = ()
    max_body_inspect_bytes: int = Field(65_536, ge=0)
    max_request_body_bytes: int = Field(10 * 1024 * 1024, ge=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return valid_cidrs(value)


class NormalizationConfig(StrictModel):
    merge_slashes: bool = True
    reject_encoded_slash: bool = Field(True, description="400 on %2F or %5C in the path")
    reject_backslash: bool = Field(True, description="400 on a raw backslash in the path")


class CacheConfig(StrictModel):
    enabled: bool = True
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "openflare:cache:"
    redis_timeout_ms: int = Field(250, gt=0)
    max_entries: int = Field(10_000, ge=0)
    max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    max_object_bytes: int = Field(8 * 1024 * 1024, ge=0, description="larger streams through")
    max_variants: int = Field(16, ge=1, description="Vary variants kept per URL")
    default_ttl_seconds: int = Field(0, ge=0, description="TTL for matching rules without one")
    default_stale_while_revalidate_seconds: int = Field(0, ge=0)
    default_stale_if_error_seconds: int = Field(0, ge=0)
    heuristic_freshness: bool = Field(False, description="10% of age since Last-Modified")
    respect_origin_cache_control: bool = True
    bypass_on_cookie: bool = True
    bypass_on_authorization: bool = Field(
        False,
        description="true: every request with Authorization bypasses the cache (Varnish's "
        "builtin VCL); false: RFC 9111 §3.5, answered and stored only with public, s-maxage "
        "or must-revalidate",
    )
    never_store_on_set_cookie: bool = True
    lock_timeout_ms: int = Field(5_000, gt=0, description="how long collapsed requests wait")
    tag_headers: tuple[str, ...] = ("Cache-Tag", "Surrogate-Key")
    strip_tag_headers: bool = True
    debug_headers: bool = False


class AdminApiConfig(StrictModel):
    enabled: bool = True
    auth_token: str | None = Field(
        None, description="prefer OPENFLARE_ADMIN_TOKEN / ADMIN_TOKEN in the environment"
    )
    auth_failure_limit: int = Field(
        10, ge=0, description="failed authentications per client IP and window, then 429"
    )
    auth_failure_window_ms: int = Field(60_000, gt=0)


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json"] = "json"
    access_log: bool = True


class TracingConfig(StrictModel):
    """OpenTelemetry traces, exported over OTLP/HTTP (protobuf) with batching. Off by default.

    The standard `OTEL_*` environment variables override these keys (see
    observability/tracing.py and docs/10-observability.md): `OTEL_TRACES_EXPORTER=otlp` or an
    `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` turns tracing on, `OTEL_SDK_DISABLED=true` or
    `OTEL_TRACES_EXPORTER=none` turns it off.
    """

    enabled: bool = False
    endpoint: str = Field(
        "http://127.0.0.1:4318",
        description="OTLP/HTTP collector base URL; /v1/traces is appended unless the path ends so",
    )
    service_name: str = Field("openflare", min_length=1)
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="share of new traces kept; a sampled parent always wins"
    )
    resource_attributes: dict[str, str] = Field(
        default_factory=dict, description="extra resource attributes, e.g. deployment.environment"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="headers sent with every export (collector auth)"
    )
    export_timeout_ms: int = Field(5_000, gt=0, description="one export request, retries included")
    schedule_delay_ms: int = Field(1_000, gt=0, description="how often the batch is exported")
    max_queue_size: int = Field(2_048, ge=1, description="spans kept while waiting; then dropped")
    max_export_batch_size: int = Field(512, ge=1)

    @field_validator("endpoint")
    @classmethod
    def _valid_endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("headers", "resource_attributes")
    @classmethod
    def _no_empty_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.strip():
                raise ValueError("keys must not be empty")
        return value


HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"


class ExplainConfig(StrictModel):
    """Decision traces of live requests (pipeline/explain.py, docs/02-pipeline.md). Off by
    default; `POST /admin/explain` and `GET /admin/trace/{id}` need no switch of their own."""

    trace_enabled: bool = Field(
        False, description="trace requests carrying the admin token or from trace_cidrs"
    )
    trace_header: str = Field(
        "X-Edge-Trace-Token",
        pattern=HEADER_NAME_PATTERN,
        description="request header carrying the admin token; never forwarded upstream",
    )
    trace_cidrs: tuple[str, ...] = Field((), description="client networks traced without a token")
    trace_header_max_bytes: int = Field(
        4096, ge=256, le=65_536, description="cap on the X-Edge-Trace response header"
    )
    trace_buffer_size: int = Field(
        256, ge=1, le=100_000, description="traces kept for GET /admin/trace/{request_id}"
    )

    @field_validator("trace_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return valid_cidrs(value)


class RuleFilesConfig(StrictModel):
    """Paths of the rule files, relative to the main config file's folder.

    A path that is set must exist (a missing WAF file is an error, never "no WAF");
    leave a key out to run that stage with no rules.
    """

    waf: str | None = None
    cache: str | None = None
    rate_limit: str | None = None


class ProxyConfig(StrictModel):
    dev_mode: bool = Field(False, description="allows the well-known dev admin token")
    server: ServerConfig = ServerConfig()
    upstreams: tuple[UpstreamConfig, ...] = Field(min_length=1)
    routing: RoutingConfig = RoutingConfig()
    security: SecurityConfig = SecurityConfig()
    normalization: NormalizationConfig = NormalizationConfig()
    cache: CacheConfig = CacheConfig()
    admin_api: AdminApiConfig = AdminApiConfig()
    logging: LoggingConfig = LoggingConfig()
    tracing: TracingConfig = TracingConfig()
    explain: ExplainConfig = ExplainConfig()
    rule_files: RuleFilesConfig = RuleFilesConfig()


Location = tuple[str | int, ...]


def reference_errors(config: ProxyConfig) -> list[tuple[Location, str]]:
    """Cross-references a field validator cannot see: names that must exist or be unique."""
    errors: list[tuple[Location, str]] = []
    seen: set[str] = set()
    for index, upstream in enumerate(config.upstreams):
        if upstream.name in seen:
            errors.append((("upstreams", index, "name"), f"duplicate upstream {upstream.name!r}"))
        seen.add(upstream.name)
    default = config.routing.default_upstream
    if default is not None and default not in seen:
        errors.append((("routing", "default_upstream"), f"unknown upstream {default!r}"))
    route_ids: set[str] = set()
    for index, route in enumerate(config.routing.routes):
        if route.id in route_ids:
            errors.append((("routing", "routes", index, "id"), f"duplicate route id {route.id!r}"))
        route_ids.add(route.id)
        if route.upstream not in seen:
            errors.append(
                (("routing", "routes", index, "upstream"), f"unknown upstream {route.upstream!r}")
            )
    return errors
