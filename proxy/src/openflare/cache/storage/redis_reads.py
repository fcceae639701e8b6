"""The Redis store's read path (every request's lookup): `GET` and `MGET` only.

`LeanReads` sends them over the lean RESP client (`openflare/resp.py`), which spends a
fraction of redis-py's Python per call; writes, purges and stats stay on redis-py. A
`rediss://` (TLS) URL or any other connection option keeps redis-py for reads too
(`RedisPyReads`), chosen once in `reads_for`. Past `MAX_CONNECTIONS` open connections a read
fails at once (the store counts it and answers a miss), as redis-py's pool did.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import redis.asyncio as aioredis

from openflare.resp import RespPool, encode_command, lean_options

MAX_CONNECTIONS = 256  # as redis-py's pool had: past it a read fails (a miss), never queues


class Reads(Protocol):
    """What the Redis store reads with."""

    async def get(self, key: str) -> bytes | None: ...

    async def mget(self, *keys: str) -> list[bytes | None]: ...

    async def aclose(self) -> None: ...


class LeanReads(RespPool):
    """`GET` / `MGET` on the lean client's pool (a full pool fails the read at once)."""

    def __init__(self, *, max_connections: int = MAX_CONNECTIONS, **address: Any) -> None:
        super().__init__(max_connections=max_connections, wait_for_room=False, **address)

    async def get(self, key: str) -> bytes | None:
        reply = await self.call(encode_command("GET", key))
        if reply is not None and not isinstance(reply, bytes):
            raise ConnectionError("GET: unexpected reply type")
        return reply

    async def mget(self, *keys: str) -> list[bytes | None]:
        reply = await self.call(encode_command("MGET", *keys))
        if not isinstance(reply, list) or len(reply) != len(keys):
            raise ConnectionError("MGET: unexpected reply")
        return reply


class RedisPyReads:
    """The same two reads through redis-py (TLS and other connection options)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def get(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._client.get(key))

    async def mget(self, *keys: str) -> list[bytes | None]:
        return cast("list[bytes | None]", list(await self._client.mget(*keys)))

    async def aclose(self) -> None:
        await self._client.aclose()


def reads_for(url: str, connect_timeout: float) -> Reads:
    """`LeanReads` for a plain `redis://` or `unix://` URL, redis-py otherwise."""
    address = lean_options(url)
    if address is not None:
        return LeanReads(**address)
    return RedisPyReads(
        aioredis.Redis.from_url(
            url,
            socket_timeout=None,  # one asyncio.timeout around each read bounds it instead
            socket_connect_timeout=connect_timeout,
            retry_on_timeout=False,
            max_connections=MAX_CONNECTIONS,
        )
    )
