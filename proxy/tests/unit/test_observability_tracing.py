"""Tracing: settings from config and OTEL_* (tables), span attributes, the stage-span wrapper
and the traced access-log stage on an in-memory exporter, and the tracing-off path."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import bundle_factories
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from openflare.config.loader import ConfigBundle
from openflare.config.models import ProxyConfig, TracingConfig, UpstreamConfig
from openflare.deps import Deps
from openflare.observability import tracing
from openflare.observability.logging import LogWriter
from openflare.observability.tracing import (
    StageSpan,
    Tracing,
    TracingRegistry,
    parse_key_values,
    ratelimit_attributes,
    redact_query,
    resolve_settings,
    traces_url,
    waf_attributes,
)
from openflare.pipeline import access_log
from openflare.pipeline.base import Exchange
from openflare.routing import Route
from openflare.runtime import RuntimeHolder, build_runtime

ENDPOINT = "http://collector:4318/v1/traces"


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "env", "enabled", "endpoint"),
    [
        ({}, {}, False, "http://127.0.0.1:4318/v1/traces"),
        ({"enabled": True, "endpoint": "http://c:4318"}, {}, True, "http://c:4318/v1/traces"),
        (
            {"enabled": True, "endpoint": "http://c:4318/v1/traces"},
            {},
            True,
            "http://c:4318/v1/traces",
        ),
        ({}, {"OTEL_TRACES_EXPORTER": "otlp"}, True, "http://127.0.0.1:4318/v1/traces"),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True, ENDPOINT),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, True, ENDPOINT),
        (
            {},
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/custom"},
            True,
            "http://t:1/custom",
        ),
        (
            {},
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/custom",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            },
            True,
            "http://t:1/custom",
        ),
        ({"enabled": True}, {"OTEL_TRACES_EXPORTER": "none"}, False, None),
        ({"enabled": True}, {"OTEL_SDK_DISABLED": "true"}, False, None),
        ({"enabled": True}, {"OTEL_SDK_DISABLED": "false"}, True, None),
        (
            {},
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:1"},
            False,
            "http://c:1/v1/traces",
        ),
        ({"enabled": True}, {"OTEL_TRACES_EXPORTER": ""}, True, None),  # empty = unset
    ],
)
def test_enabled_and_endpoint(
    config: dict[str, Any], env: dict[str, str], enabled: bool, endpoint: str | None
) -> None:
    settings = resolve_settings(TracingConfig(**config), env)
    assert settings.enabled is enabled
    if endpoint is not None:
        assert settings.endpoint == endpoint


def test_environment_overrides_the_file() -> None:
    config = TracingConfig(
        enabled=True,
        service_name="edge",
        sample_ratio=0.25,
        resource_attributes={"deployment.environment": "staging", "team": "edge"},
        headers={"x-api-key": "file", "x-other": "kept"},
    )
    settings = resolve_settings(
        config,
        {
            "OTEL_SERVICE_NAME": "edge-prod",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,k8s.pod.name=p%2D1",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=env,authorization=Bearer%20t",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "authorization=Bearer%20traces",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_BSP_SCHEDULE_DELAY": "250",
        },
    )
    resource = dict(settings.resource)
    assert resource["service.name"] == "edge-prod"
    assert resource["deployment.environment"] == "prod"
    assert resource["k8s.pod.name"] == "p-1"
    assert resource["team"] == "edge"
    assert resource["service.version"] and resource["service.instance.id"]
    assert dict(settings.headers) == {
        "x-api-key": "env",
        "x-other": "kept",
        "authorization": "Bearer traces",
    }
    assert settings.export_timeout == 2.5
    assert settings.compression == "gzip"
    assert settings.schedule_delay_ms == 250
    assert (settings.sampler, settings.sampler_arg) == ("parentbased_traceidratio", 0.25)
    assert settings.ignored == ()


def test_service_name_in_resource_attributes_loses_to_otel_service_name() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=a", "OTEL_SERVICE_NAME": "b"}
    assert resolve_settings(TracingConfig(), env).service_name == "b"
    only = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=a"}
    assert resolve_settings(TracingConfig(), only).service_name == "a"


@pytest.mark.parametrize(
    ("env", "sampler", "arg"),
    [
        ({}, "parentbased_traceidratio", 1.0),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, "always_off", 1.0),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
            "traceidratio",
            0.1,
        ),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, "parentbased_always_on", 1.0),
        ({"OTEL_TRACES_SAMPLER_ARG": "0.5"}, "parentbased_traceidratio", 0.5),
    ],
)
def test_sampler(env: dict[str, str], sampler: str, arg: float) -> None:
    settings = resolve_settings(TracingConfig(enabled=True), env)
    assert (settings.sampler, settings.sampler_arg) == (sampler, arg)
    assert settings.ignored == ()


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "only http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "only otlp"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "not an integer"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "must be positive"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"}, "gzip or none"),
    ],
)
def test_unusable_environment_values_are_reported_not_fatal(
    env: dict[str, str], problem: str
) -> None:
    settings = resolve_settings(TracingConfig(enabled=True), env)
    assert any(problem in text for text in settings.ignored), settings.ignored
    assert settings.enabled


def test_key_values_and_urls() -> None:
    assert parse_key_values("a=1, b = x%20y ,=no,bad,c=") == {"a": "1", "b": "x y", "c": ""}
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/otlp/") == "http://c:4318/otlp/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_config_section_is_strict() -> None:
    with pytest.raises(ValueError):
        TracingConfig(endpoint="collector:4318")
    with pytest.raises(ValueError):
        TracingConfig(sample_ratio=1.5)
    with pytest.raises(ValueError):
        TracingConfig.model_validate({"enabled": True, "sampler": "x"})


# --- attributes ---------------------------------------------------------------------------------


def test_query_credentials_are_redacted() -> None:
    assert redact_query("a=1&Signature=s3cr3t&sig=x&X-Goog-Signature=y&b") == (
        "a=1&Signature=REDACTED&sig=REDACTED&X-Goog-Signature=REDACTED&b"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {"openflare.waf.action": "pass"}),
        ("block:a,b", {"openflare.waf.action": "block", "openflare.waf.rule_ids": ["a", "b"]}),
        ("would_block:x", {"openflare.waf.action": "would_block", "openflare.waf.rule_ids": ["x"]}),
    ],
)
def test_waf_attributes(value: str, expected: dict[str, Any]) -> None:
    exchange = Exchange(make_mocked_request("GET", "/"), 0.0, False)
    exchange.waf = value
    assert waf_attributes(exchange) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {"openflare.ratelimit.decision": "none"}),
        ("exempt", {"openflare.ratelimit.decision": "exempt"}),
        (
            "deny:api",
            {"openflare.ratelimit.decision": "deny", "openflare.ratelimit.rule_id": "api"},
        ),
    ],
)
def test_ratelimit_attributes(value: str, expected: dict[str, Any]) -> None:
    exchange = Exchange(make_mocked_request("GET", "/"), 0.0, False)
    exchange.ratelimit = value
    assert ratelimit_attributes(exchange) == expected


# --- spans on an in-memory exporter -------------------------------------------------------------


@pytest.fixture
def memory() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    settings = resolve_settings(TracingConfig(enabled=True), {})
    traced = Tracing(settings)
    exporter = InMemorySpanExporter()
    traced.provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield traced, exporter
    traced.provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


async def test_stage_span_covers_only_the_stage_and_restores_the_parent(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    from opentelemetry import trace

    traced, exporter = memory
    seen: dict[str, Any] = {}

    class Waf:
        async def __call__(self, exchange: Exchange, next: Any) -> web.StreamResponse:
            exchange.waf = "log:r1"
            return await next(exchange)

    async def terminal(exchange: Exchange) -> web.StreamResponse:
        seen["current"] = trace.get_current_span()
        return web.Response(text="ok")

    exchange = Exchange(make_mocked_request("GET", "/x"), 0.0, False)
    root = traced.tracer.start_span("root")
    with trace.use_span(root, end_on_exit=True):
        stage = StageSpan(Waf(), traced.tracer, "waf", waf_attributes)  # type: ignore[arg-type]
        await stage(exchange, terminal)
    spans = by_name(exporter.get_finished_spans())
    waf = spans["waf"]
    assert waf.parent is not None and waf.parent.span_id == root.get_span_context().span_id
    assert seen["current"] is root  # what runs after the stage runs under the parent again
    assert waf.attributes == {"openflare.waf.action": "log", "openflare.waf.rule_ids": ("r1",)}
    assert waf.end_time is not None and waf.end_time <= spans["root"].end_time  # type: ignore[operator]


async def test_stage_span_records_an_exception(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    traced, exporter = memory

    class Broken:
        async def __call__(self, exchange: Exchange, next: Any) -> web.StreamResponse:
            raise RuntimeError("boom")

    async def terminal(exchange: Exchange) -> web.StreamResponse:
        raise AssertionError("not reached")

    stage = StageSpan(Broken(), traced.tracer, "cache", lambda e: {})  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        await stage(Exchange(make_mocked_request("GET", "/"), 0.0, False), terminal)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def config_bundle(tracing_config: dict[str, Any] | None = None) -> ConfigBundle:
    return bundle_factories.config_bundle(
        ProxyConfig(
            upstreams=(UpstreamConfig(name="o", base_url="http://127.0.0.1:1"),),
            tracing=TracingConfig(**(tracing_config or {})),
        )
    )


async def test_traced_access_log_continues_traceparent_and_correlates(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    traced, exporter = memory
    out = io.BytesIO()
    log = LogWriter(out)
    deps = Deps(log=log)
    stage = access_log.TracedAccessLogStage(log, deps.metrics, True, traced)
    request = make_mocked_request(
        "GET",
        "/static/app.js?v=1",
        headers={
            "Host": "example.com:8443",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "User-Agent": "ua",
        },
    )
    exchange = Exchange(request, 0.0, False)
    exchange.request_id = "rid-1"

    async def answer(exchange: Exchange) -> web.StreamResponse:
        exchange.route = Route("static", "o", "/static/")
        exchange.cache_status = "HIT"
        return web.Response(status=200, text="x")

    await stage(exchange, answer)
    log.flush()
    log.close()
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.name == "GET /static/*"
    assert f"{span.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/static/app.js"
    assert attributes["url.query"] == "v=1"
    assert attributes["server.address"] == "example.com"
    assert attributes["server.port"] == 8443
    assert attributes["http.route"] == "/static/*"
    assert attributes["http.response.status_code"] == 200
    assert attributes["openflare.request_id"] == "rid-1"
    assert attributes["openflare.cache.status"] == "HIT"
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["span_id"] == f"{span.context.span_id:016x}"
    # the latency observation carries the trace as an exemplar
    exposition, _ = deps.metrics.render("application/openmetrics-text; version=1.0.0")
    assert b'trace_id="4bf92f3577b34da6a3ce929d0e0e4736"' in exposition


async def test_server_span_of_a_5xx_is_an_error(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    traced, exporter = memory
    log = LogWriter(io.BytesIO())
    stage = access_log.TracedAccessLogStage(log, Deps(log=log).metrics, False, traced)

    async def answer(exchange: Exchange) -> web.StreamResponse:
        exchange.error = "upstream_connect"
        return web.Response(status=502)

    await stage(Exchange(make_mocked_request("FOO", "/"), 0.0, False), answer)
    log.close()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.name == "HTTP"  # an unknown method, and no route
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "502"
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "FOO"
    assert attributes["openflare.error"] == "upstream_connect"


# --- off by default: nothing of the above is composed ----------------------------------------


async def test_tracing_off_composes_the_plain_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(tracing.os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    deps = Deps(log=LogWriter(io.BytesIO()))
    runtime = build_runtime(config_bundle(), deps)
    assert runtime.tracing is None
    assert type(runtime.stage_objects["access_log"]) is access_log.AccessLogStage
    assert deps.log.trace_ids is None
    assert all(pool.tracing is None for pool in deps.upstreams.current())
    assert all(not pool.session.trace_configs for pool in deps.upstreams.current())
    await deps.close()
    deps.log.close()


async def test_tracing_on_composes_spans_and_reuses_the_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = TracingRegistry()
    monkeypatch.setattr(tracing, "REGISTRY", registry)
    monkeypatch.setattr("openflare.runtime.REGISTRY", registry)
    deps = Deps(log=LogWriter(io.BytesIO()))
    on = {"enabled": True, "endpoint": "http://127.0.0.1:9"}
    first = build_runtime(config_bundle(on), deps)
    assert first.tracing is not None
    assert type(first.stage_objects["access_log"]) is access_log.TracedAccessLogStage
    assert all(pool.session.trace_configs for pool in deps.upstreams.current())
    holder = RuntimeHolder(first)
    assert registry.live is first.tracing
    same = build_runtime(config_bundle(on), deps)
    assert same.tracing is first.tracing  # unchanged settings: same provider, same pools
    holder.swap(same)
    other = build_runtime(config_bundle({**on, "service_name": "x"}), deps)
    assert other.tracing is not None and other.tracing is not first.tracing
    assert build_runtime(config_bundle({**on, "service_name": "x"}), deps).tracing is other.tracing
    holder.swap(other)
    assert registry.live is other.tracing
    off = build_runtime(config_bundle(), deps)
    holder.swap(off)
    assert registry.live is None
    for used in (first.tracing, other.tracing):
        used.shutdown(timeout=1.0)
    await deps.close()
    deps.log.close()
