"""The runtime: one loaded config bundle compiled into one request handler.

`PIPELINE` below is the whole request path, in order, in one place. A runtime is immutable; a
reload builds a complete new one (every rule compiled and validated) and `RuntimeHolder.swap`
replaces it in one assignment. A request reads `holder.runtime` once and keeps that runtime for
its whole life, so requests in flight during a reload finish on the config they started with.

With tracing on (`tracing` section or `OTEL_*`), the stages that do real work (waf, ratelimit,
cache) are composed inside a span each (observability/tracing.py `StageSpan`); with it off the
chain is exactly the stage list, with no wrapper and no per-request tracing code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from openflare.config.loader import ConfigBundle
from openflare.deps import Deps
from openflare.observability.tracing import REGISTRY, Tracing, current_ids, tracing_for, wrap_stage
from openflare.pipeline import (
    access_log,
    cache,
    explain,
    fault,
    forward,
    limits,
    normalize,
    ratelimit,
    recovery,
    request_id,
    route,
    waf,
)
from openflare.pipeline.base import Handler, Stage, StageFactory, compose

PIPELINE: tuple[tuple[str, StageFactory], ...] = (
    ("request_id", request_id.build),  # 1  request ID, client IP
    ("access_log", access_log.build),  # 2  JSON line + request metrics, on the way out
    ("recovery", recovery.build),  # 3  exception → 500 with the request ID
    ("explain", explain.build),  # traced or not: token header / debug CIDR (off unless configured)
    ("limits", limits.build),  # 4  414 / 431 / 413
    ("normalize", normalize.build),  # 5  canonical path, 400 on hostile encodings
    ("server_timing", explain.build_server_timing),  # per route (off unless configured)
    ("waf", waf.build),  # 6  403 (enforce) or log (shadow)
    ("ratelimit", ratelimit.build),  # 7  429
    ("route", route.build),  # 8  host + longest prefix → upstream, 404
    ("fault", fault.build),  # test-only fault injection (off unless configured)
    ("cache", cache.build),  # 9-11, 13  eligibility, lookup, collapsing, store
)
# 12: forward to the origin ends the chain; 14 (response headers) is Exchange.finalize_headers.
TERMINAL = forward.build_terminal


@dataclass(frozen=True, slots=True)
class Runtime:
    bundle: ConfigBundle
    handler: Handler
    stages: tuple[str, ...]
    stage_objects: dict[str, Stage]
    debug_headers: bool
    loaded_at: float
    tracing: Tracing | None = None
    # requests without a body start inline, in the read callback (pipeline/inline.py), unless
    # a stage always waits (a store in Redis): each of them would only be handed over
    inline: bool = True


def build_runtime(bundle: ConfigBundle, deps: Deps) -> Runtime:
    tracing, settings = tracing_for(bundle.proxy.tracing, on_export=deps.metrics.export_result)
    for problem in settings.ignored:
        deps.log.event("warning", "tracing_env_ignored", problem=problem)
    stages: dict[str, Stage] = {}
    for name, factory in PIPELINE:
        stage = factory(bundle, deps)
        if stage is not None:
            stages[name] = stage
    names = [*stages, "forward"]
    chain = list(stages.values())
    if tracing is not None:
        chain = [wrap_stage(name, stage, tracing) for name, stage in stages.items()]
        deps.log.trace_ids = current_ids  # event lines (waf, panic...) carry the trace
        if tracing is not REGISTRY.live:
            deps.log.event(
                "info",
                "tracing",
                endpoint=settings.endpoint,
                service_name=settings.service_name,
                sampler=settings.sampler,
                sampler_arg=settings.sampler_arg,
            )
    deps.metrics.upstream_pools.pools = deps.upstreams.current
    return Runtime(
        bundle=bundle,
        handler=compose(chain, TERMINAL(bundle, deps)),
        stages=tuple(names),
        stage_objects=stages,
        debug_headers=bundle.proxy.cache.debug_headers,
        loaded_at=time.time(),
        tracing=tracing,
        inline=not any(getattr(stage, "waits", False) for stage in stages.values()),
    )


class RuntimeHolder:
    """The one mutable reference to the current runtime."""

    __slots__ = ("runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        REGISTRY.activate(runtime.tracing, None)

    def swap(self, runtime: Runtime) -> Runtime:
        previous, self.runtime = self.runtime, runtime
        REGISTRY.activate(runtime.tracing, previous.tracing)
        return previous
