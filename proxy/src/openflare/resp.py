"""A lean Redis client for the two calls every request may make: the cache store's reads
(`GET` / `MGET`, cache/storage/redis_reads.py) and the rate limiter's script (`EVALSHA`,
ratelimit/redis.py).

redis-py spends most of such a call in its own Python: the pool's lock, command packing,
asyncio streams' `readuntil` per reply line, the RESP parser's recursion
(docs/12-performance.md, "What sharing costs"). `RespPool` speaks just enough RESP2 over
pooled connections of a plain `asyncio.Protocol`: one write per command, replies parsed in
place as they arrive, one future per call. Writes, purges, stats and TLS stay on redis-py.

It is used for `redis://` and `unix://` URLs, with their username, password and database
(sent once per connection as `AUTH` and `SELECT`); a `rediss://` (TLS) URL or any other
connection option keeps redis-py (`lean_options` decides, once per client).

A connection carries one command at a time. A call that fails, times out or is cancelled
closes its connection (its reply could still arrive and would answer the next command); only
a connection whose reply was read whole goes back to the pool. At most `max_connections` are
open; past that a call either fails at once (`wait_for_room=False`: the cache's reads count
it and answer a miss) or waits for a connection to come back, in arrival order
(`wait_for_room=True`: the rate limiter, as redis-py's blocking pool did; its caller's
timeout bounds the wait).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from redis.asyncio.connection import Connection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ResponseError

from openflare.waiting_line import WaitingLine

Reply = bytes | int | None | list[Any] | ResponseError
URL_OPTIONS = frozenset({"host", "port", "db", "username", "password", "path", "connection_class"})


def lean_options(url: str) -> dict[str, Any] | None:
    """`RespPool`'s keyword arguments for a plain `redis://` or `unix://` URL; None for a URL
    that needs redis-py (TLS, or a connection option the lean client does not have)."""
    options = cast("dict[str, Any]", parse_url(url))
    connection_class = options.get("connection_class", Connection)
    if not set(options) <= URL_OPTIONS or connection_class not in (
        Connection,
        UnixDomainSocketConnection,
    ):
        return None
    return {
        "host": options.get("host") or "127.0.0.1",
        "port": int(options.get("port") or 6379),
        "path": options.get("path"),
        "db": int(options.get("db") or 0),
        "username": options.get("username"),
        "password": options.get("password"),
    }


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


class RespPool:
    """Commands on a pool of `RespConnection`s (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        max_connections: int,
        wait_for_room: bool,
    ) -> None:
        self._host = host
        self._port = port
        self._path = path
        self._max_connections = max_connections
        self._wait_for_room = wait_for_room
        self._open = 0  # connections made and not yet dropped
        self._handshake: list[bytes] = []  # sent once on each new connection
        if password:
            credentials = [username, password] if username else [password]
            self._handshake.append(encode_command("AUTH", *credentials))
        if db:
            self._handshake.append(encode_command("SELECT", str(db)))
        self._idle: list[RespConnection] = []
        self._waiters = WaitingLine()  # calls waiting for a connection (wait_for_room)

    @property
    def open_connections(self) -> int:
        return self._open

    async def call(self, command: bytes) -> Reply:
        """Send `command` (`encode_command`) and return its reply; an error reply raises
        `ResponseError`, a broken connection or a full pool `ConnectionError`."""
        connection = await self._acquire()
        done = False
        try:
            reply = await connection.call(command)
            done = True
            return reply
        finally:
            if done and connection.reusable:
                self._idle.append(connection)
            else:
                self._drop(connection)  # its reply may still come: never reused
            if self._waiters:
                self._waiters.wake_one()

    async def _acquire(self) -> RespConnection:
        while True:
            idle = self._idle
            while idle:
                connection = idle.pop()
                if not connection.closed:  # Redis may have closed it while idle
                    return connection
                self._drop(connection)
            if self._open < self._max_connections:
                return await self._connect()
            if not self._wait_for_room:
                raise ConnectionError(f"too many Redis connections ({self._max_connections})")
            await self._waiters.wait()  # the caller's timeout bounds the wait

    async def _connect(self) -> RespConnection:
        self._open += 1
        loop = asyncio.get_running_loop()
        try:
            if self._path is not None:
                _, connection = await loop.create_unix_connection(RespConnection, self._path)
            else:
                _, connection = await loop.create_connection(RespConnection, self._host, self._port)
        except BaseException:
            self._open -= 1
            if self._waiters:
                self._waiters.wake_one()
            raise
        try:
            for command in self._handshake:
                await connection.call(command)
        except BaseException:
            self._drop(connection)
            if self._waiters:
                self._waiters.wake_one()
            raise
        return connection

    def _drop(self, connection: RespConnection) -> None:
        connection.close()
        self._open -= 1

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._drop(connection)
