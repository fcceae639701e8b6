"""OpenTelemetry traces: settings from config and `OTEL_*`, one tracer provider, span helpers.

Off by default, and then nothing here runs on the request path: the runtime composes the plain
stages, the access log is the plain one and the upstream sessions have no trace hooks. When on
(`tracing.enabled`, or the standard environment variables), a request gets

```
SERVER  "GET /static/*"        access-log stage: continues an incoming `traceparent`
  INTERNAL "waf"               each wrapped stage's own time: from entering it until it calls
  INTERNAL "ratelimit"         `next` or answers, so siblings show where the time goes
  INTERNAL "cache"             ... and the cache's own origin fetch nests under it (MISS)
    CLIENT "GET"               the upstream call (aiohttp client instrumentation), which sends
  CLIENT "GET"                 `traceparent` to the origin
```

Spans are exported over OTLP/HTTP (protobuf) by a `BatchSpanProcessor`: ending a span appends
to a bounded queue, a background thread exports, a full queue drops. An unreachable collector
costs the request path nothing; the exporter's complaints are logged at most once a minute.

The SDK is imported only when tracing is turned on (the proxy's optional `otel` extra). A
`Tracing` is inert until the runtime that uses it goes live (`start`); the runtime it replaced
retires its own after a grace period, so in-flight requests end their spans normally.
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from openflare import __version__

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from openflare.config.models import TracingConfig
    from openflare.pipeline.base import Exchange, Handler, Stage

OTLP_TRACES_PATH = "/v1/traces"
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# Query parameters whose values are credentials (HTTP semantic conventions, url.query).
REDACTED_QUERY_KEYS = frozenset({"awsaccesskeyid", "signature", "sig", "x-goog-signature"})
INSTANCE_ID = str(uuid.uuid4())  # service.instance.id: one per process, stable across reloads
RETIRE_GRACE_SECONDS = 60.0
EXIT_FLUSH_SECONDS = 3.0
LOG_EVERY_SECONDS = 60.0


class TracingUnavailable(RuntimeError):
    """Tracing is on but the OpenTelemetry SDK is not installed."""


# --------------------------------------------------------------------------------------------
# settings: the config section, overridden by the standard environment variables


@dataclass(frozen=True)
class TracingSettings:
    enabled: bool
    endpoint: str  # the full OTLP/HTTP traces URL
    headers: tuple[tuple[str, str], ...]
    resource: tuple[tuple[str, str], ...]
    sampler: str
    sampler_arg: float
    export_timeout: float  # seconds
    compression: str  # none | gzip
    schedule_delay_ms: int
    max_queue_size: int
    max_export_batch_size: int
    ignored: tuple[str, ...] = ()  # environment values that could not be used, and why

    @property
    def service_name(self) -> str:
        return dict(self.resource)["service.name"]


def _env(env: Mapping[str, str], name: str) -> str | None:
    """The spec: an empty value is the same as an unset one."""
    value = env.get(name, "").strip()
    return value or None


def parse_key_values(text: str) -> dict[str, str]:
    """`k1=v1,k2=v2` as `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS` write it
    (values percent-decoded); members without `=` or with an empty key are skipped."""
    result: dict[str, str] = {}
    for member in text.split(","):
        key, sep, value = member.partition("=")
        key = key.strip()
        if sep and key:
            result[key] = unquote(value.strip())
    return result


def traces_url(base: str) -> str:
    """A collector base URL with the traces path appended (kept when already there)."""
    if urlsplit(base).path.rstrip("/").endswith(OTLP_TRACES_PATH):
        return base
    return base.rstrip("/") + OTLP_TRACES_PATH


def _int_env(
    env: Mapping[str, str], names: tuple[str, ...], default: int, ignored: list[str]
) -> int:
    for name in names:
        raw = _env(env, name)
        if raw is None:
            continue
        try:
            value = int(raw)
        except ValueError:
            ignored.append(f"{name}={raw!r}: not an integer")
            continue
        if value <= 0:
            ignored.append(f"{name}={raw!r}: must be positive")
            continue
        return value
    return default


def resolve_settings(config: TracingConfig, env: Mapping[str, str]) -> TracingSettings:
    """The tracing settings in force: `config` (the `tracing` section) with the OTel
    environment variables on top, the way an operator or the OpenTelemetry Operator sets them."""
    ignored: list[str] = []
    enabled = config.enabled
    exporters = _env(env, "OTEL_TRACES_EXPORTER")
    if exporters is not None:
        names = {name.strip().lower() for name in exporters.split(",")}
        if "otlp" in names:
            enabled = True
        elif "none" in names:
            enabled = False
        unknown = names - {"otlp", "none"}
        if unknown:
            ignored.append(f"OTEL_TRACES_EXPORTER: only otlp is supported, not {sorted(unknown)}")

    endpoint = traces_url(config.endpoint)
    specific = _env(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    generic = _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if specific is not None:
        endpoint, enabled = specific, enabled or exporters is None
    elif generic is not None:
        endpoint, enabled = traces_url(generic), enabled or exporters is None
    if (_env(env, "OTEL_SDK_DISABLED") or "").lower() == "true":
        enabled = False

    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = _env(env, name)
        if protocol is not None:
            if protocol != "http/protobuf":
                ignored.append(f"{name}={protocol!r}: only http/protobuf is supported")
            break

    headers = dict(config.headers)
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        raw = _env(env, name)
        if raw is not None:
            headers.update(parse_key_values(raw))

    compression = "none"
    for name in ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"):
        raw = _env(env, name)
        if raw is not None:
            if raw.lower() in ("gzip", "none"):
                compression = raw.lower()
            else:
                ignored.append(f"{name}={raw!r}: use gzip or none")
            break

    timeout_ms = _int_env(
        env,
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
        config.export_timeout_ms,
        ignored,
    )

    resource: dict[str, str] = {
        "service.name": config.service_name,
        "service.version": __version__,
        "service.instance.id": INSTANCE_ID,
        "host.name": socket.gethostname(),
        "process.runtime.name": platform.python_implementation().lower(),
        "process.runtime.version": platform.python_version(),
    }
    resource.update(config.resource_attributes)
    resource["service.name"] = config.service_name
    raw_attributes = _env(env, "OTEL_RESOURCE_ATTRIBUTES")
    if raw_attributes is not None:
        resource.update(parse_key_values(raw_attributes))
    service = _env(env, "OTEL_SERVICE_NAME")
    if service is not None:
        resource["service.name"] = service

    sampler, sampler_arg = "parentbased_traceidratio", config.sample_ratio
    raw_sampler = _env(env, "OTEL_TRACES_SAMPLER")
    if raw_sampler is not None:
        if raw_sampler.lower() in SAMPLERS:
            sampler = raw_sampler.lower()
            if sampler.endswith("traceidratio"):
                sampler_arg = 1.0  # the spec's default when no argument is given
        else:
            ignored.append(f"OTEL_TRACES_SAMPLER={raw_sampler!r}: one of {', '.join(SAMPLERS)}")
    raw_arg = _env(env, "OTEL_TRACES_SAMPLER_ARG")
    if raw_arg is not None and sampler.endswith("traceidratio"):
        try:
            ratio = float(raw_arg)
        except ValueError:
            ratio = -1.0
        if 0.0 <= ratio <= 1.0:
            sampler_arg = ratio
        else:
            ignored.append(f"OTEL_TRACES_SAMPLER_ARG={raw_arg!r}: a number from 0 to 1")

    return TracingSettings(
        enabled=enabled,
        endpoint=endpoint,
        headers=tuple(sorted(headers.items())),
        resource=tuple(sorted(resource.items())),
        sampler=sampler,
        sampler_arg=sampler_arg,
        export_timeout=timeout_ms / 1000,
        compression=compression,
        schedule_delay_ms=_int_env(
            env, ("OTEL_BSP_SCHEDULE_DELAY",), config.schedule_delay_ms, ignored
        ),
        max_queue_size=_int_env(env, ("OTEL_BSP_MAX_QUEUE_SIZE",), config.max_queue_size, ignored),
        max_export_batch_size=_int_env(
            env, ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",), config.max_export_batch_size, ignored
        ),
        ignored=tuple(ignored),
    )


# --------------------------------------------------------------------------------------------
# the provider


class _Throttle(logging.Filter):
    """Lets each distinct message of the OTel SDK's loggers through once a minute: a collector
    that is down must not turn every dropped span into a log line on the event loop."""

    def __init__(self, every: float = LOG_EVERY_SECONDS) -> None:
        super().__init__()
        self._every = every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._every:
                return False
            if len(self._last) > 256:
                self._last.clear()
            self._last[key] = now
        return True


_THROTTLE = _Throttle()
_NOISY_LOGGERS = (
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.exporter.http_transport",
    "opentelemetry.context",
    "opentelemetry.attributes",
)


def _throttle_sdk_logs() -> None:
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _THROTTLE not in logger.filters:
            logger.addFilter(_THROTTLE)


class _CountingExporter:
    """Wraps the OTLP exporter to count what left the process (`on_export(result, spans)`)."""

    def __init__(self, inner: Any, on_export: Callable[[str, int], None] | None) -> None:
        self._inner = inner
        self._on_export = on_export

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self._inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if self._on_export is not None:
            ok = result == SpanExportResult.SUCCESS
            self._on_export("ok" if ok else "error", len(spans))
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


def _sampler(settings: TracingSettings) -> Any:
    from opentelemetry.sdk.trace import sampling

    name = settings.sampler
    root: sampling.Sampler
    if name.endswith("always_on"):
        root = sampling.ALWAYS_ON
    elif name.endswith("always_off"):
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(settings.sampler_arg)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


class _OtelApi:
    """The OpenTelemetry API functions the request path calls, imported once tracing is on
    (a function-level import per request would cost more than the span)."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate, trace

        self.attach = context.attach
        self.detach = context.detach
        self.get_current = context.get_current
        self.extract = propagate.extract
        self.set_span_in_context = trace.set_span_in_context
        self.get_current_span = trace.get_current_span
        self.server = trace.SpanKind.SERVER
        self.error = trace.StatusCode.ERROR


_API: _OtelApi | None = None


def _api() -> _OtelApi:
    global _API
    if _API is None:
        _API = _OtelApi()
    return _API


class Tracing:
    """One tracer provider built from `settings`: what a runtime with tracing on holds."""

    def __init__(
        self, settings: TracingSettings, on_export: Callable[[str, int], None] | None = None
    ) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise TracingUnavailable(
                "tracing is on but OpenTelemetry is not installed: pip install 'openflare[otel]'"
            ) from exc
        self.settings = settings
        self._on_export = on_export
        self.provider: TracerProvider = TracerProvider(
            sampler=_sampler(settings),
            resource=Resource(dict(settings.resource)),
            shutdown_on_exit=False,  # our own exit hook bounds the flush (see `shutdown`)
        )
        self.tracer: Tracer = self.provider.get_tracer("openflare", __version__)
        self._api = _api()
        self._state = "new"  # new -> started -> stopped
        self._lock = threading.Lock()

    def start(self) -> None:
        """Attach the exporter: from now on ended spans are queued and exported."""
        with self._lock:
            if self._state != "new":
                return
            self._state = "started"
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        _throttle_sdk_logs()
        settings = self.settings
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint,
            headers=dict(settings.headers),
            timeout=settings.export_timeout,
            compression=Compression.Gzip
            if settings.compression == "gzip"
            else Compression.NoCompression,
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                _CountingExporter(exporter, self._on_export),  # type: ignore[arg-type]
                max_queue_size=settings.max_queue_size,
                schedule_delay_millis=settings.schedule_delay_ms,
                max_export_batch_size=min(settings.max_export_batch_size, settings.max_queue_size),
            )
        )
        _EXIT.register(self)

    def shutdown(self, timeout: float = EXIT_FLUSH_SECONDS) -> None:
        """Export what is queued, waiting at most `timeout` seconds (the exporter runs in a
        daemon thread, so a collector that does not answer cannot hold the process)."""
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
        _EXIT.unregister(self)
        worker = threading.Thread(
            target=self.provider.shutdown, name="openflare-otel-shutdown", daemon=True
        )
        worker.start()
        worker.join(timeout)

    def retire(self, grace: float = RETIRE_GRACE_SECONDS) -> None:
        """Shut down after `grace` seconds (the runtime using this was replaced)."""
        timer = threading.Timer(grace, self.shutdown)
        timer.daemon = True
        timer.start()

    # --- request path (only when on) ------------------------------------------------------

    def upstream_trace_config(self, upstream: str) -> aiohttp.TraceConfig:
        """The aiohttp client instrumentation for one upstream pool: a CLIENT span per
        upstream request, and `traceparent` injected into the request headers."""
        from opentelemetry.instrumentation._semconv import _StabilityMode
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config

        def request_hook(span: Span, params: aiohttp.TraceRequestStartParams) -> None:
            if span.is_recording():
                span.set_attribute("openflare.upstream", upstream)
                request_id = params.headers.get("X-Request-ID")
                if request_id:
                    span.set_attribute("openflare.request_id", request_id)

        return create_trace_config(
            request_hook=request_hook,
            tracer_provider=self.provider,
            sem_conv_opt_in_mode=_StabilityMode.HTTP,
        )

    def start_server_span(self, exchange: Exchange) -> tuple[Span, object]:
        """The SERVER span of a request, continuing an incoming `traceparent`, made current.
        Returns the span and the context token `end_server_span` needs."""
        api = self._api
        parent = api.extract(exchange.request.headers)
        started_ns = time.time_ns() - int((time.monotonic() - exchange.started) * 1e9)
        span = self.tracer.start_span(
            exchange.method if exchange.method in KNOWN_METHODS else "HTTP",
            context=parent,
            kind=api.server,
            start_time=started_ns,
        )
        # after the sampling decision (the samplers offered decide on the trace id and the
        # parent only): a request that is not sampled does not build its attributes
        if span.is_recording():
            span.set_attributes(server_attributes(exchange))
        token = api.attach(api.set_span_in_context(span, parent))
        return span, token

    def end_server_span(
        self,
        exchange: Exchange,
        span: Span,
        token: object,
        status: int,
        error: BaseException | None,
    ) -> None:
        try:
            if span.is_recording():
                route = exchange.route
                method = exchange.method if exchange.method in KNOWN_METHODS else "HTTP"
                if route is not None:
                    http_route = route.path_prefix + "*"
                    span.update_name(f"{method} {http_route}")
                    span.set_attribute("http.route", http_route)
                span.set_attributes(outcome_attributes(exchange))
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("http.response.body.size", exchange.bytes_sent)
                if error is not None:
                    span.record_exception(error)
                    span.set_attribute("error.type", type(error).__qualname__)
                    span.set_status(self._api.error, type(error).__qualname__)
                elif status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(self._api.error)
            span.end()
        finally:
            self._api.detach(token)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# attributes (HTTP semantic conventions, plus openflare.* for what only the edge knows)


def _host_and_port(host: str, scheme: str) -> tuple[str, int]:
    default = 443 if scheme == "https" else 80
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = host.partition(":")
    return name, int(port_text) if port_text.isdigit() else default


def redact_query(query: str) -> str:
    if not query:
        return query
    parts = []
    for member in query.split("&"):
        key, sep, _value = member.partition("=")
        if sep and unquote(key).lower() in REDACTED_QUERY_KEYS:
            member = f"{key}=REDACTED"
        parts.append(member)
    return "&".join(parts)[:1024]


def server_attributes(exchange: Exchange) -> dict[str, Any]:
    """Attributes known when the request arrives (the sampler sees these)."""
    request = exchange.request
    raw_path, _, query = request.raw_path.partition("?")
    scheme = request.scheme
    method = exchange.method
    attributes: dict[str, Any] = {
        "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
        "url.scheme": scheme,
        "url.path": raw_path[:1024],
        "client.address": exchange.client_ip,
        "network.peer.address": exchange.peer_ip,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
        "openflare.request_id": exchange.request_id,
    }
    if method not in KNOWN_METHODS:
        attributes["http.request.method_original"] = method[:64]
    if query:
        attributes["url.query"] = redact_query(query)
    if exchange.host:
        name, port = _host_and_port(exchange.host, scheme)
        attributes["server.address"] = name[:256]
        attributes["server.port"] = port
    agent = request.headers.get("User-Agent")
    if agent:
        attributes["user_agent.original"] = agent[:512]
    return attributes


def _split(value: str) -> tuple[str, list[str]]:
    """`"block:rule-a,rule-b"` → ("block", ["rule-a", "rule-b"]); `"exempt"` → ("exempt", [])."""
    action, _, ids = value.partition(":")
    return action, [i for i in ids.split(",") if i]


def waf_attributes(exchange: Exchange) -> dict[str, Any]:
    if not exchange.waf:
        return {"openflare.waf.action": "pass"}
    action, ids = _split(exchange.waf)
    return {"openflare.waf.action": action, "openflare.waf.rule_ids": ids}


def ratelimit_attributes(exchange: Exchange) -> dict[str, Any]:
    if not exchange.ratelimit:
        return {"openflare.ratelimit.decision": "none"}
    decision, ids = _split(exchange.ratelimit)
    attributes: dict[str, Any] = {"openflare.ratelimit.decision": decision}
    if ids:
        attributes["openflare.ratelimit.rule_id"] = ids[0]
    return attributes


def cache_attributes(exchange: Exchange) -> dict[str, Any]:
    return {"openflare.cache.status": exchange.cache_status} if exchange.cache_status else {}


def outcome_attributes(exchange: Exchange) -> dict[str, Any]:
    """What the pipeline decided, for the server span."""
    attributes: dict[str, Any] = {"openflare.request_id": exchange.request_id}
    route = exchange.route
    if route is not None:
        attributes["openflare.route"] = route.id
        attributes["openflare.upstream"] = route.upstream
    if exchange.cache_status:
        attributes["openflare.cache.status"] = exchange.cache_status
    if exchange.waf:
        attributes.update(waf_attributes(exchange))
    if exchange.ratelimit:
        attributes.update(ratelimit_attributes(exchange))
    if exchange.upstream_status:
        attributes["openflare.upstream.status_code"] = exchange.upstream_status
    if exchange.error:
        attributes["openflare.error"] = exchange.error[:256]
    return attributes


# --------------------------------------------------------------------------------------------
# one span per wrapped stage


Annotate = Callable[["Exchange"], dict[str, Any]]
STAGE_ATTRIBUTES: dict[str, Annotate] = {
    "waf": waf_attributes,
    "ratelimit": ratelimit_attributes,
    "cache": cache_attributes,
}


class StageSpan:
    """Wraps a stage in an INTERNAL span that ends when the stage calls `next` or answers,
    so the stage's own time is its span; what comes after runs under the parent again.
    Composed in only when tracing is on (runtime.py)."""

    __slots__ = ("_stage", "_tracer", "_name", "_annotate", "_api")

    def __init__(self, stage: Stage, tracer: Tracer, name: str, annotate: Annotate) -> None:
        self._stage = stage
        self._tracer = tracer
        self._name = name
        self._annotate = annotate
        self._api = _api()

    async def __call__(self, exchange: Exchange, next: Handler) -> web.StreamResponse:
        api = self._api
        parent = api.get_current()
        span = self._tracer.start_span(self._name, context=parent)
        token = api.attach(api.set_span_in_context(span, parent))
        ended = False

        def finish() -> None:
            nonlocal ended
            if not ended:
                ended = True
                if span.is_recording():
                    span.set_attributes(self._annotate(exchange))
                span.end()

        async def proceed(exchange: Exchange) -> web.StreamResponse:
            finish()
            inner = api.attach(parent)
            try:
                return await next(exchange)
            finally:
                api.detach(inner)

        try:
            return await self._stage(exchange, proceed)
        except BaseException as exc:
            if not ended and span.is_recording():
                span.record_exception(exc)
                span.set_status(api.error, type(exc).__qualname__)
            raise
        finally:
            finish()
            api.detach(token)


def wrap_stage(name: str, stage: Stage, tracing: Tracing) -> Stage:
    annotate = STAGE_ATTRIBUTES.get(name)
    if annotate is None:
        return stage
    return StageSpan(stage, tracing.tracer, name, annotate)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, for log lines; None outside a trace."""
    span_context = (_API or _api()).get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def span_ids(span: Span) -> tuple[str, str, bool] | None:
    """(trace_id, span_id, sampled) of `span` when it is valid."""
    span_context = span.get_span_context()
    if not span_context.is_valid:
        return None
    return (
        f"{span_context.trace_id:032x}",
        f"{span_context.span_id:016x}",
        span_context.trace_flags.sampled,
    )


# --------------------------------------------------------------------------------------------
# which Tracing is live (the one of the runtime serving now)


class _ExitHook:
    """Flushes the live providers when the process exits, bounded by EXIT_FLUSH_SECONDS."""

    def __init__(self) -> None:
        self._live: list[Tracing] = []
        self._lock = threading.Lock()
        self._registered = False

    def register(self, tracing: Tracing) -> None:
        with self._lock:
            self._live.append(tracing)
            if not self._registered:
                atexit.register(self.run)
                self._registered = True

    def unregister(self, tracing: Tracing) -> None:
        with self._lock:
            if tracing in self._live:
                self._live.remove(tracing)

    def run(self) -> None:
        for tracing in list(self._live):
            tracing.shutdown()


_EXIT = _ExitHook()


class TracingRegistry:
    """Reuses the live `Tracing` while the settings stay the same, so a reload that does not
    touch `tracing` keeps the provider, its queue and the upstream pools' trace hooks."""

    def __init__(self) -> None:
        self.live: Tracing | None = None
        self._pending: Tracing | None = None  # built for a runtime not (yet) live

    def for_settings(
        self, settings: TracingSettings, on_export: Callable[[str, int], None] | None = None
    ) -> Tracing | None:
        """The same instance for the same settings: every stage factory of one runtime build
        (and a retried build) gets one provider."""
        if not settings.enabled:
            return None
        for known in (self.live, self._pending):
            if known is not None and known.settings == settings:
                return known
        self._pending = Tracing(settings, on_export)
        return self._pending

    def activate(self, tracing: Tracing | None, previous: Tracing | None) -> None:
        """`tracing` belongs to the runtime that just went live; `previous` to the one it
        replaced (its provider is shut down after a grace period)."""
        if tracing is not None:
            tracing.start()
        if tracing is self._pending:
            self._pending = None
        self.live = tracing
        if previous is not None and previous is not tracing:
            previous.retire()


REGISTRY = TracingRegistry()


def tracing_for(
    config: TracingConfig,
    env: Mapping[str, str] | None = None,
    on_export: Callable[[str, int], None] | None = None,
) -> tuple[Tracing | None, TracingSettings]:
    """The `Tracing` a runtime built from `config` uses (None when off), and the settings."""
    settings = resolve_settings(config, os.environ if env is None else env)
    return REGISTRY.for_settings(settings, on_export), settings
