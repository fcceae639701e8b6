"""One pooled `aiohttp.ClientSession` per upstream, kept across reloads while its config is
unchanged.

The session is tuned for proxying, not for being a browser: no automatic decompression, no
headers the client did not send (`User-Agent`, `Accept`, `Accept-Encoding`, `Content-Type`),
no cookie jar shared between clients, no redirects followed, larger header limits than a
client library's defaults. Connect timeout is enforced by the session; the time-to-first-byte
timeout is applied around each request by the forward stage.

With tracing off and only plain-http targets, requests without a body go through the lean
HTTP/1.1 client instead (`http1`, upstream/http1.py); requests with a body always use the
session. With tracing on, every request uses the session, which then carries the
OpenTelemetry aiohttp client instrumentation (a CLIENT span per upstream request,
`traceparent` injected). Which client a pool uses is decided here, once. A pool is rebuilt
when its config or the tracing it was built for changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

import aiohttp

from openflare.config.models import UpstreamConfig
from openflare.upstream.http1 import MAX_RESPONSE_HEADER_FIELD, Http1Pool
from openflare.upstream.targets import TargetSet

if TYPE_CHECKING:
    from openflare.observability.tracing import Tracing

SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class UpstreamPool:
    __slots__ = (
        "config",
        "name",
        "base_url",
        "session",
        "http1",
        "header_timeout",
        "pass_host_header",
        "tracing",
        "targets",
        "retries",
    )

    def __init__(self, config: UpstreamConfig, tracing: Tracing | None = None) -> None:
        self.config = config
        self.tracing = tracing
        self.name = config.name
        self.base_url = config.base_url
        self.header_timeout = config.response_header_timeout_ms / 1000
        self.pass_host_header = config.pass_host_header
        self.targets = TargetSet(config)  # base_url is targets[0]; see upstream/targets.py
        self.retries = config.retries
        connector = aiohttp.TCPConnector(
            limit=config.max_idle_conns,
            limit_per_host=config.max_idle_conns_per_host,
            ttl_dns_cache=10,
            keepalive_timeout=30,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=SKIP_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                # total bounds the whole exchange, body reads included (streams forever)
                total=config.total_timeout_ms / 1000 or None,
                sock_connect=config.connect_timeout_ms / 1000,
            ),
            max_field_size=MAX_RESPONSE_HEADER_FIELD,
            max_line_size=MAX_RESPONSE_HEADER_FIELD,
            raise_for_status=False,
            trace_configs=[tracing.upstream_trace_config(config.name)] if tracing else None,
        )
        lean = tracing is None and all(t.origin is not None for t in self.targets.targets)
        self.http1 = (
            Http1Pool(
                limit=config.max_idle_conns,
                limit_per_host=config.max_idle_conns_per_host,
                connect_timeout=config.connect_timeout_ms / 1000,
                total_timeout=config.total_timeout_ms / 1000 or None,
            )
            if lean
            else None
        )

    def connections_in_use(self) -> int:
        """Connections carrying a request now (aiohttp keeps no public count of these)."""
        lean = self.http1.connections_in_use() if self.http1 is not None else 0
        connector = self.session.connector
        if connector is None:
            return lean
        return lean + len(getattr(connector, "_acquired", ()))

    def connections_idle(self) -> int:
        """Open connections waiting in the pool for the next request."""
        lean = self.http1.connections_idle() if self.http1 is not None else 0
        connector = self.session.connector
        if connector is None:
            return lean
        return lean + sum(len(conns) for conns in getattr(connector, "_conns", {}).values())

    def connection_limit(self) -> int:
        connector = self.session.connector
        return connector.limit if connector is not None else 0

    async def close(self) -> None:
        if self.http1 is not None:
            self.http1.close()
        await self.session.close()


class UpstreamPools:
    """All upstream pools of the process. `refresh` keeps the pools whose config did not change
    and closes the others after a grace period, so in-flight requests on the old runtime
    finish on the pool they started with."""

    def __init__(self, close_grace_seconds: float = 60.0) -> None:
        self._pools: dict[str, UpstreamPool] = {}
        self._grace = close_grace_seconds
        self._closing: set[asyncio.Task[None]] = set()

    def current(self) -> list[UpstreamPool]:
        """The pools of the latest runtime (for the connection gauges)."""
        return list(self._pools.values())

    def refresh(
        self, configs: Iterable[UpstreamConfig], tracing: Tracing | None = None
    ) -> dict[str, UpstreamPool]:
        current: dict[str, UpstreamPool] = {}
        retired: list[UpstreamPool] = []
        for config in configs:
            existing = self._pools.get(config.name)
            if existing is not None and existing.config == config and existing.tracing is tracing:
                current[config.name] = existing
            else:
                if existing is not None:
                    retired.append(existing)
                current[config.name] = UpstreamPool(config, tracing)
        retired.extend(p for name, p in self._pools.items() if name not in current)
        self._pools = current
        for pool in retired:
            task = asyncio.get_running_loop().create_task(self._close_later(pool))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return dict(current)

    async def _close_later(self, pool: UpstreamPool) -> None:
        try:
            await asyncio.sleep(self._grace)
        finally:
            await pool.close()

    async def close(self) -> None:
        pending = list(self._closing)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for pool in self._pools.values():
            await pool.close()
        self._pools = {}
