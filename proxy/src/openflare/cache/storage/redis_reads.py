"""The Redis store's read path (every request's lookup): `GET` and `MGET` only.

redis-py spends most of a cache HIT from Redis in its own Python: the pool's lock, command
packing, asyncio streams' `readuntil` per reply line, the RESP parser's recursion
(docs/12-performance.md, "What sharing costs"). `LeanReads` speaks just enough RESP2 for two
commands over pooled connections of a plain `asyncio.Protocol`: one write per command, replies
parsed in place as they arrive, one future per call. Writes, purges and stats stay on redis-py.

It is used for `redis://` and `unix://` URLs, with their username, password and database
(sent once per connection as `AUTH` and `SELECT`); a `rediss://` (TLS) URL or any other
connection option keeps redis-py for reads too (`RedisPyReads`), chosen once in `reads_for`.

A connection carries one command at a time. A call that fails, times out or is cancelled
closes its connection (its reply could still arrive and would answer the next command);
only a connection whose reply was read whole goes back to the pool. At most `max_connections`
are open; a read past that fails at once (the store counts it and answers a miss), as
redis-py's pool did.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ResponseError

Reply = bytes | int | None | list[Any] | ResponseError
MAX_CONNECTIONS = 256  # as redis-py's pool had: past it a read fails (a miss), never queues
URL_OPTIONS = frozenset({"host", "port", "db", "username", "password", "path", "connection_class"})


class Reads(Protocol):
    """What the Redis store reads with."""

    async def get(self, key: str) -> bytes | None: ...

    async def mget(self, *keys: str) -> list[bytes | None]: ...

    async def aclose(self) -> None: ...


class IncompleteReply(Exception):
    """Not all of the reply has arrived yet."""


def encode_command(*parts: str | bytes) -> bytes:
    """A RESP2 array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse_reply(buffer: bytes | bytearray, start: int = 0) -> tuple[Reply, int]:
    """One RESP2 reply at `start`: (value, the offset after it). Raises IncompleteReply when
    the buffer ends first; an error reply is returned as a ResponseError (raised by the
    caller, after the whole reply is consumed)."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise IncompleteReply
    kind = buffer[start]
    line = bytes(buffer[start + 1 : end])
    after = end + 2
    if kind == 0x24:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            raise IncompleteReply
        return bytes(buffer[after : after + size]), after + size + 2
    if kind == 0x2A:  # * array
        count = int(line)
        if count < 0:
            return None, after
        items: list[Any] = []
        for _ in range(count):
            item, after = parse_reply(buffer, after)
            items.append(item)
        return items, after
    if kind == 0x2B:  # + simple string
        return line, after
    if kind == 0x3A:  # : integer
        return int(line), after
    if kind == 0x2D:  # - error
        return ResponseError(line.decode("utf-8", "replace")), after
    raise ConnectionError(f"unexpected reply from Redis: {bytes(buffer[start:end])[:40]!r}")


class RespConnection(asyncio.Protocol):
    """One connection: `call` writes a command and waits for its whole reply."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Reply] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # a reply nobody waits for: this connection is out of step
            return
        buffer = self._buffer
        if buffer:  # the rest of a reply that came in pieces
            buffer += data
            source: bytes | bytearray = buffer
        else:  # usually the whole reply in one read: parsed from it, nothing kept
            source = data
        try:
            reply, used = parse_reply(source)
        except IncompleteReply:
            if source is data:
                self._buffer = bytearray(data)
            return
        except (ValueError, ConnectionError) as exc:
            waiter.set_exception(ConnectionError(f"bad reply from Redis: {exc}"))
            self.close()
            return
        self._buffer = bytearray()  # a large reply's buffer is not kept
        self._waiter = None
        if used != len(source):  # more than one reply to one command: out of step
            waiter.set_exception(ConnectionError("unexpected bytes from Redis"))
            self.close()
            return
        waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("Redis closed the connection"))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    async def call(self, command: bytes) -> Reply:
        transport = self._transport
        if transport is None or self.closed or self._waiter is not None:
            raise ConnectionError("connection not usable")
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        transport.write(command)
        reply: Reply = await waiter
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    @property
    def reusable(self) -> bool:
        return not self.closed and self._waiter is None


class LeanReads:
    """`GET` / `MGET` on a pool of `RespConnection`s (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._host = host
        self._port = port
        self._path = path
        self._max_connections = max_connections
        self._open = 0  # connections made and not yet dropped
        self._handshake: list[bytes] = []  # sent once on each new connection
        if password:
            credentials = [username, password] if username else [password]
            self._handshake.append(encode_command("AUTH", *credentials))
        if db:
            self._handshake.append(encode_command("SELECT", str(db)))
        self._idle: list[RespConnection] = []

    async def _connect(self) -> RespConnection:
        if self._open >= self._max_connections:
            raise ConnectionError(f"too many Redis connections ({self._max_connections})")
        self._open += 1
        loop = asyncio.get_running_loop()
        try:
            if self._path is not None:
                _, connection = await loop.create_unix_connection(RespConnection, self._path)
            else:
                _, connection = await loop.create_connection(RespConnection, self._host, self._port)
        except BaseException:
            self._open -= 1
            raise
        try:
            for command in self._handshake:
                await connection.call(command)
        except BaseException:
            self._drop(connection)
            raise
        return connection

    def _drop(self, connection: RespConnection) -> None:
        connection.close()
        self._open -= 1

    async def _call(self, command: bytes) -> Reply:
        idle = self._idle
        connection = None
        while idle:
            connection = idle.pop()
            if not connection.closed:  # Redis may have closed it while idle (timeout, kill)
                break
            self._drop(connection)
            connection = None
        if connection is None:
            connection = await self._connect()
        done = False
        try:
            reply = await connection.call(command)
            done = True
            return reply
        finally:
            if done and connection.reusable:
                idle.append(connection)
            else:
                self._drop(connection)  # its reply may still come: never reused

    async def get(self, key: str) -> bytes | None:
        reply = await self._call(encode_command("GET", key))
        if reply is not None and not isinstance(reply, bytes):
            raise ConnectionError("GET: unexpected reply type")
        return reply

    async def mget(self, *keys: str) -> list[bytes | None]:
        reply = await self._call(encode_command("MGET", *keys))
        if not isinstance(reply, list) or len(reply) != len(keys):
            raise ConnectionError("MGET: unexpected reply")
        return reply

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._drop(connection)


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
    options = cast("dict[str, Any]", parse_url(url))
    connection_class = options.get("connection_class", Connection)
    if set(options) <= URL_OPTIONS and connection_class in (
        Connection,
        UnixDomainSocketConnection,
    ):
        return LeanReads(
            host=options.get("host") or "127.0.0.1",
            port=int(options.get("port") or 6379),
            path=options.get("path"),
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
        )
    return RedisPyReads(
        aioredis.Redis.from_url(
            url,
            socket_timeout=None,  # one asyncio.timeout around each read bounds it instead
            socket_connect_timeout=connect_timeout,
            retry_on_timeout=False,
            max_connections=MAX_CONNECTIONS,
        )
    )
