"""One pooled `aiohttp.ClientSession` per upstream, kept across reloads while its config is
unchanged.

The session is tuned for proxying, not for being a browser: no automatic decompression, no
headers the client did not send (`User-Agent`, `Accept`, `Accept-Encoding`, `Content-Type`),
no cookie jar shared between clients, no redirects followed, larger header limits than a
client library's defaults. Connect timeout is enforced by the session; the time-to-first-byte
timeout is applied around each request by the forward stage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp

from openflare.config.models import UpstreamConfig

SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
MAX_RESPONSE_HEADER_FIELD = 65_536


class UpstreamPool:
    __slots__ = ("config", "name", "base_url", "session", "header_timeout", "pass_host_header")

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.name
        self.base_url = config.base_url
        self.header_timeout = config.response_header_timeout_ms / 1000
        self.pass_host_header = config.pass_host_header
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
                total=None, sock_connect=config.connect_timeout_ms / 1000
            ),
            max_field_size=MAX_RESPONSE_HEADER_FIELD,
            max_line_size=MAX_RESPONSE_HEADER_FIELD,
            raise_for_status=False,
        )

    def connections_in_use(self) -> int:
        connector = self.session.connector
        if connector is None:
            return 0
        return sum(len(conns) for conns in getattr(connector, "_acquired_per_host", {}).values())

    async def close(self) -> None:
        await self.session.close()


class UpstreamPools:
    """All upstream pools of the process. `refresh` keeps the pools whose config did not change
    and closes the others after a grace period, so in-flight requests on the old runtime
    finish on the pool they started with."""

    def __init__(self, close_grace_seconds: float = 60.0) -> None:
        self._pools: dict[str, UpstreamPool] = {}
        self._grace = close_grace_seconds
        self._closing: set[asyncio.Task[None]] = set()

    def refresh(self, configs: Iterable[UpstreamConfig]) -> dict[str, UpstreamPool]:
        current: dict[str, UpstreamPool] = {}
        retired: list[UpstreamPool] = []
        for config in configs:
            existing = self._pools.get(config.name)
            if existing is not None and existing.config == config:
                current[config.name] = existing
            else:
                if existing is not None:
                    retired.append(existing)
                current[config.name] = UpstreamPool(config)
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
