"""A lean pooled HTTP/1.1 client for upstream requests without a body.

`aiohttp.ClientSession` costs more CPU per request than the rest of the pass-through path
(a `ClientRequest`, a `ClientResponse`, cookie, auth, proxy and redirect handling, an
`asyncio.timeout` per request). This client keeps what matters and drops the rest: it writes
the request head in one `transport.write` and reads the answer with aiohttp's own
`ResponseHandler` and C response parser, so framing (Content-Length, chunked, close-delimited,
no body for HEAD/204/304, 1xx skipped), header limits and truncation detection (a cut body
raises `ClientPayloadError` to the reader) are exactly the session's. Timeouts are single
`call_at` timers: time-to-first-byte (bounded by the total timeout) until the headers, then the
total timeout over the body. A connection goes back to the pool only once its body was read to
the end and neither side asked to close; a request that fails on a reused connection before any
answer is sent again once on a new connection (RFC 9112 §9.3.1, as aiohttp does), for
idempotent methods.

Requests with a body, and every request while tracing is on (the OpenTelemetry aiohttp
instrumentation), keep using the pool's `ClientSession` (upstream/pool.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import ClientOSError, ServerDisconnectedError
from aiohttp.client_exceptions import ConnectionTimeoutError
from aiohttp.client_proto import ResponseHandler
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy

from openflare.waiting_line import WaitingLine

# the session's defaults (upstream/pool.py): same limits, same buffer
READ_BUFSIZE = 2**16
MAX_RESPONSE_HEADER_FIELD = 65_536
MAX_HEADERS = 128
KEEPALIVE_SECONDS = 30.0
# aiohttp sends a request without a body again on a new connection for these (RFC 9110 §9.2.2)
RETRY_ON_STALE_CONNECTION = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# aiohttp adds `Content-Length: 0` to a request without a body of any other method
NO_LENGTH_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class UpstreamResponse(Protocol):
    """What the proxy reads of an upstream response: `aiohttp.ClientResponse` (the session
    path) and `Http1Response` (this client) both are one."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content(self) -> StreamReader: ...

    @property
    def content_length(self) -> int | None: ...

    def release(self) -> object: ...

    def close(self) -> None: ...


class ConnectFailed(OSError):
    """The origin could not be connected to (refused, unreachable, name not resolved)."""


def lean_origin(url: str) -> Origin | None:
    """The target `url` as this client sees it, or None when it is one for the session: https,
    credentials in the URL (aiohttp turns them into `Authorization`), a host that is not ASCII
    (yarl would IDNA-encode it) or a port that does not parse."""
    try:
        return Origin(url)
    except ValueError:
        return None


class Origin:
    """Where one target's requests go, parsed once: address, `Host` value, path prefix."""

    __slots__ = ("host", "port", "host_header", "path_prefix", "key")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.hostname.isascii():
            raise ValueError(f"not a plain http URL with an ASCII host: {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are the session's business")
        self.host = parts.hostname
        self.port = parts.port or 80  # ValueError for a port out of range
        # what aiohttp sends when the client's Host is not passed on
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == 80 else f"{host}:{self.port}"
        self.path_prefix = parts.path.rstrip("/")
        self.key = (self.host, self.port)

    def request_head(self, method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
        """The request line and header block, serialized as aiohttp does (Host first when the
        client sent none, `Content-Length: 0` for a body-less POST/PUT/PATCH/DELETE)."""
        block = "\r\n".join(map(": ".join, headers))
        # one CRLF between lines and no other CR or LF: a header cannot smuggle a second line
        breaks = len(headers) - 1 if headers else 0
        if block.count("\n") != breaks or block.count("\r") != breaks:
            raise ValueError("newline or carriage return in a request header")
        if "\r" in target or "\n" in target:
            raise ValueError("newline or carriage return in the request target")
        head = f"{method} {self.path_prefix}{target} HTTP/1.1\r\n"
        lowered = "\r\n" + block.lower()  # every name follows a CRLF
        if "\r\nhost:" not in lowered:
            head += f"Host: {self.host_header}\r\n"
        if block:
            head += block + "\r\n"
        if method not in NO_LENGTH_METHODS and "\r\ncontent-length:" not in lowered:
            head += "Content-Length: 0\r\n"
        return (head + "\r\n").encode("utf-8")


class Connection(ResponseHandler):
    """aiohttp's client protocol (parser, payload streams, keep-alive bookkeeping), noting
    which kind of response parser it holds: with a body, or without (HEAD)."""

    skips_payload: bool | None = None


class Http1Response:
    """An upstream response whose headers arrived; its body streams from `content`."""

    __slots__ = (
        "status",
        "reason",
        "headers",
        "content",
        "_pool",
        "_origin",
        "_protocol",
        "_timer",
        "_done",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: Http1Pool,
        origin: Origin,
        protocol: Connection,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        content: StreamReader,
        total_deadline: float | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        self._pool = pool
        self._origin = origin
        self._protocol = protocol
        self._done = False
        self._timer = (
            loop.call_at(total_deadline, self._total_timeout)
            if total_deadline is not None
            else None
        )
        content.on_eof(self.release)  # the whole body arrived: the connection is free again

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return None if value is None else int(value)

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool if the body was read
        to the end and it may be reused, else it is closed."""
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        protocol = self._protocol
        reusable = not protocol.should_close and protocol.is_connected()
        self._pool.release(self._origin, protocol, reusable)

    def close(self) -> None:
        """Abandon the response (the rest of the body is not wanted): close the connection."""
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        self._pool.release(self._origin, self._protocol, False)

    def _total_timeout(self) -> None:
        """`total_timeout_ms` ran out mid-body: the reader gets a TimeoutError."""
        self._timer = None
        if not self.content.is_eof():
            self.content.set_exception(TimeoutError())
        self.close()


class Http1Pool:
    """Keep-alive connections to the targets of one upstream, at most `limit` in use at once
    (0: no cap) and `limit_per_host` per target; idle ones are closed after 30 s."""

    __slots__ = (
        "_limit",
        "_limit_per_host",
        "_connect_timeout",
        "_total_timeout",
        "_idle",
        "_in_use",
        "_taken",
        "_taken_by_host",
        "_waiters",
        "_sweep",
        "_closed",
    )

    def __init__(
        self,
        *,
        limit: int,
        limit_per_host: int,
        connect_timeout: float,
        total_timeout: float | None,
    ) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        # (host, port) → [(connection, idle since)], the most recently used last
        self._idle: dict[tuple[str, int], list[tuple[Connection, float]]] = {}
        self._in_use: set[Connection] = set()
        self._taken = 0  # in use or being opened
        self._taken_by_host: dict[tuple[str, int], int] = {}
        self._waiters = WaitingLine()  # requests waiting for a free connection slot
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    # --- gauges -------------------------------------------------------------------------------

    def connections_in_use(self) -> int:
        return len(self._in_use)

    def connections_idle(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    # --- one exchange -------------------------------------------------------------------------

    async def send(
        self, origin: Origin, method: str, head: bytes, header_timeout: float
    ) -> Http1Response:
        """Send a request without a body and return the response once its headers arrived.
        Raises TimeoutError (time to first byte), aiohttp.ConnectionTimeoutError,
        ConnectFailed, aiohttp.ServerDisconnectedError / ClientOSError (reset) or
        HttpProcessingError (invalid response)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + header_timeout
        total_deadline = now + self._total_timeout if self._total_timeout else None
        if total_deadline is not None and total_deadline < deadline:
            deadline = total_deadline
        retry_stale = method in RETRY_ON_STALE_CONNECTION
        skip_payload = method == "HEAD"
        while True:
            protocol, reused = await self._acquire(origin, deadline)
            try:
                if protocol.skips_payload is not skip_payload:
                    # a parser for this kind of answer; one that finished a response is ready
                    # for the next on the same connection, so it is kept while the kind holds
                    protocol.set_response_params(
                        skip_payload=skip_payload,
                        read_until_eof=True,  # no length, not chunked: ends with the connection
                        auto_decompress=False,
                        read_bufsize=READ_BUFSIZE,
                        max_line_size=MAX_RESPONSE_HEADER_FIELD,
                        max_field_size=MAX_RESPONSE_HEADER_FIELD,
                        max_headers=MAX_HEADERS,
                    )
                    protocol.skips_payload = skip_payload
                transport = protocol.transport
                if transport is None:
                    raise ServerDisconnectedError()
                transport.write(head)
                timer = loop.call_at(deadline, _header_timeout, protocol)
                try:
                    while True:
                        message, payload = await protocol.read()
                        code = message.code
                        if code < 100 or code > 199 or code == 101:
                            break
                finally:
                    timer.cancel()
            except (ServerDisconnectedError, ClientOSError):
                self.release(origin, protocol, False)
                if reused and retry_stale:
                    retry_stale = False  # the origin closed an idle connection: once more
                    continue
                raise
            except BaseException:
                self.release(origin, protocol, False)
                raise
            if code == 101:
                protocol.force_close()  # never reused after a protocol switch
            return Http1Response(
                loop,
                self,
                origin,
                protocol,
                code,
                message.reason,
                message.headers,
                payload,
                total_deadline,
            )

    # --- the pool -----------------------------------------------------------------------------

    async def _acquire(self, origin: Origin, deadline: float) -> tuple[Connection, bool]:
        """A connection to `origin` (and whether it was reused), counted as in use."""
        key = origin.key
        while not self._has_room(key):
            await self._wait_for_room(deadline)
        self._take(key)
        idle = self._idle.get(key)
        if idle:
            expired = time.monotonic() - KEEPALIVE_SECONDS
            while idle:
                protocol, since = idle.pop()
                if since > expired and protocol.is_connected() and not protocol.should_close:
                    self._in_use.add(protocol)
                    return protocol, True
                protocol.close()
        try:
            protocol = await self._connect(origin, deadline)
        except BaseException:
            self._give_back(key)
            raise
        self._in_use.add(protocol)
        return protocol, False

    def release(self, origin: Origin, protocol: Connection, reusable: bool) -> None:
        """`protocol` is no longer in use: keep it for the next request or close it."""
        if protocol not in self._in_use:
            return
        self._in_use.discard(protocol)
        if reusable and not self._closed:
            self._idle.setdefault(origin.key, []).append((protocol, time.monotonic()))
            if self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(
                    KEEPALIVE_SECONDS, self._close_expired
                )
        else:
            protocol.close()
        self._give_back(origin.key)

    def _take(self, key: tuple[str, int]) -> None:
        self._taken += 1
        by_host = self._taken_by_host
        by_host[key] = by_host.get(key, 0) + 1

    def _give_back(self, key: tuple[str, int]) -> None:
        self._taken -= 1
        self._taken_by_host[key] -= 1
        if self._waiters:
            self._waiters.wake_one()

    def _has_room(self, key: tuple[str, int]) -> bool:
        """Slots are taken by connections in use and by those being opened."""
        if self._limit and self._taken >= self._limit:
            return False
        return not (
            self._limit_per_host and self._taken_by_host.get(key, 0) >= self._limit_per_host
        )

    async def _wait_for_room(self, deadline: float) -> None:
        async with asyncio.timeout_at(deadline):
            await self._waiters.wait()

    async def _connect(self, origin: Origin, deadline: float) -> Connection:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        connect_binds = self._connect_timeout <= remaining
        try:
            async with asyncio.timeout(min(self._connect_timeout, remaining)):
                _, protocol = await loop.create_connection(
                    lambda: Connection(loop), origin.host, origin.port
                )
        except TimeoutError:
            if connect_binds:
                raise ConnectionTimeoutError(
                    f"connection timeout to {origin.host}:{origin.port}"
                ) from None
            raise
        except OSError as exc:
            message = f"cannot connect to {origin.host}:{origin.port}: {exc}"
            raise ConnectFailed(exc.errno, message) from exc
        return protocol

    def _close_expired(self) -> None:
        self._sweep = None
        expired = time.monotonic() - KEEPALIVE_SECONDS
        for key, idle in list(self._idle.items()):
            keep = [(p, since) for p, since in idle if since > expired and p.is_connected()]
            for protocol, since in idle:
                if since <= expired or not protocol.is_connected():
                    protocol.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle and not self._closed:
            self._sweep = asyncio.get_running_loop().call_later(
                KEEPALIVE_SECONDS, self._close_expired
            )

    def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for protocol, _ in idle:
                protocol.close()
        self._idle.clear()
        for protocol in list(self._in_use):
            protocol.close()
        self._waiters.fail_all(ServerDisconnectedError("upstream pool closed"))


def _header_timeout(protocol: Connection) -> None:
    """No response headers in time: the waiting read raises TimeoutError."""
    protocol.set_exception(TimeoutError())
