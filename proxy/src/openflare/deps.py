"""Long-lived state that survives reloads: logs, metrics, upstream pools, health.

A runtime is rebuilt on every reload; these are built once per process and handed to each
runtime's stage factories (later: the cache store and the rate-limit backend live here too)."""

from __future__ import annotations

from dataclasses import dataclass, field

from openflare.observability.health import Health
from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics
from openflare.upstream.pool import UpstreamPools


@dataclass
class Deps:
    log: LogWriter
    metrics: Metrics = field(default_factory=Metrics)
    upstreams: UpstreamPools = field(default_factory=UpstreamPools)
    health: Health = field(default_factory=Health)

    async def close(self) -> None:
        await self.upstreams.close()
