"""A raw-bytes recording origin: proves what the proxy actually puts on the wire.

The FastAPI origin sees requests through uvicorn and h11, which would hide (or refuse) framing
the proxy got wrong. This one is a plain asyncio TCP server: it keeps every byte received on
every connection, and answers with fixed bytes chosen by the first path segment of each
request, so one instance serves every fault the hardening tests need.

Answers, by the first path segment:

- anything else: `200 OK`, `Content-Length`, body `raw-origin ok\\n`, keep-alive;
- `/reflect`: `200`, the request exactly as received (head and body) as the body;
  `Cache-Control` from the `cc` query parameter (default `public, max-age=60`);
- `/account...` (also `/account;x`, `/accountX`): a per-user page, like a framework that
  ignores path suffixes: `Cache-Control` from `cc` (default `private, max-age=60`), the
  request's `Cookie` and `Authorization` in the body;
- `/status/<n>`: that status with a short body;
- `/chunked`: `200` with a chunked body of three chunks (`one`, `two`, `three`);
- `/invalid`: a malformed status line (`HTTP/1.1 2OO OK`); `/garbage`: bytes that are not HTTP;
- `/inject-cr`, `/inject-nul`: a response header whose value holds a bare CR / a NUL;
- `/hang`: nothing, ever (the connection stays open until the peer closes it);
- `/close`: FIN without a response; `/reset`: TCP RST without a response;
- `/reset-mid-body`: headers announcing 100 000 bytes, 5 000 of them, then RST;
- `/forever`: a chunked body that never ends, 1 KiB every 20 ms until the peer leaves;
- `/slow-headers`: the status line, then the rest after `delay_ms` (query, default 1000).

The request framing this origin applies is the strict RFC 9112 one (`parse_requests`), and
every byte stream it received can be checked with `parse_requests` too: a test asserts that
a connection's bytes are exactly a sequence of well-formed requests, nothing more.

Run it standalone with `python -m openflare_testsite.raw_origin --port 8001` (one JSON line per
request on stdout), or in-process with `RawOrigin().start_in_thread()` as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# field-value: visible ASCII, obs-text, SP and HTAB inside; no CR, LF or NUL anywhere
FIELD_VALUE_RE = re.compile(
    rb"^[\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?$"
)
REQUEST_LINE_RE = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/[\x21-\x7e]*) HTTP/1\.1$")
CHUNK_SIZE_RE = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
OK_BODY = b"raw-origin ok\n"
MAX_HEAD = 1024 * 1024


class Malformed(ValueError):
    """The bytes are not a well-formed HTTP/1.1 request (message says why)."""


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes  # the request exactly as received: head, framing and body

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    lines = head.split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line or b"\x00" in line:
            raise Malformed(f"bare CR, LF or NUL in {line[:80]!r}")
    match = REQUEST_LINE_RE.match(lines[0])
    if match is None:
        raise Malformed(f"bad request line {lines[0][:200]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise Malformed(f"obs-fold line {line[:80]!r}")
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN_RE.match(name):
            raise Malformed(f"bad header line {line[:80]!r}")
        value = value.strip(b" \t")
        if value and not FIELD_VALUE_RE.match(value):
            raise Malformed(f"bad header value {line[:80]!r}")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    return match.group(1).decode(), match.group(2).decode("latin-1"), headers


def _framing(headers: list[tuple[str, str]]) -> tuple[str, int]:
    """("none" | "length" | "chunked", length) under RFC 9112 §6, refusing ambiguity."""
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    codings = [v for k, v in headers if k.lower() == "transfer-encoding"]
    hosts = [v for k, v in headers if k.lower() == "host"]
    if len(hosts) != 1:
        raise Malformed(f"{len(hosts)} Host header lines")
    if codings:
        if lengths:
            raise Malformed("both Transfer-Encoding and Content-Length")
        if len(codings) != 1 or codings[0] != "chunked":
            raise Malformed(f"Transfer-Encoding {codings!r} is not exactly 'chunked'")
        return "chunked", 0
    if lengths:
        if len(lengths) != 1 or not lengths[0].isdigit():
            raise Malformed(f"Content-Length {lengths!r}")
        return "length", int(lengths[0])
    return "none", 0


def _parse_chunked(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """(body, end position) of a chunked body starting at `pos`; None if incomplete."""
    body = bytearray()
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = data[pos:eol]
        if not CHUNK_SIZE_RE.match(size_text):  # no extensions, no whitespace: re-framed
            raise Malformed(f"bad chunk size line {size_text[:40]!r}")
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            if data[pos : pos + 2] == b"\r\n":
                return bytes(body), pos + 2
            if len(data) < pos + 2:
                return None
            raise Malformed("trailer fields after the last chunk")
        if len(data) < pos + size + 2:
            return None
        body += data[pos : pos + size]
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise Malformed("chunk data not followed by CRLF")
        pos += size + 2


def parse_one(data: bytes) -> tuple[Request, int] | None:
    """The first complete request in `data` and its length; None if `data` holds only part of
    one; Malformed if it is not well formed."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise Malformed("request head over 1 MiB")
        return None
    method, target, headers = _parse_head(data[:end])
    kind, length = _framing(headers)
    start = end + 4
    if kind == "chunked":
        parsed = _parse_chunked(data, start)
        if parsed is None:
            return None
        body, stop = parsed
    elif kind == "length":
        if len(data) < start + length:
            return None
        body, stop = data[start : start + length], start + length
    else:
        body, stop = b"", start
    return Request(method, target, headers, body, bytes(data[:stop])), stop


def parse_requests(data: bytes) -> list[Request]:
    """Every request in a connection's bytes; Malformed if anything is malformed or left over
    (a request cut short counts as left over)."""
    requests: list[Request] = []
    pos = 0
    while pos < len(data):
        parsed = parse_one(data[pos:])
        if parsed is None:
            raise Malformed(f"{len(data) - pos} trailing bytes are not a complete request")
        request, used = parsed
        requests.append(request)
        pos += used
    return requests


# --------------------------------------------------------------------------------------------
# the server


@dataclass
class Connection:
    id: int
    peer: str
    received: bytearray = field(default_factory=bytearray)
    requests: list[Request] = field(default_factory=list)
    error: str | None = None  # framing error the origin itself hit
    closed: bool = False


def _response(status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Status'}"]
    head += [f"{k}: {v}" for k, v in headers]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class RawOrigin:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, echo: bool = False) -> None:
        self.host = host
        self.port = port
        self.echo = echo  # print one JSON line per request (CLI)
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- views for tests ----------------------------------------------------------------------

    def snapshot(self) -> list[tuple[int, bytes, list[Request]]]:
        with self._lock:
            return [(c.id, bytes(c.received), list(c.requests)) for c in self.connections]

    def requests(self) -> list[Request]:
        with self._lock:
            return [r for c in self.connections for r in c.requests]

    def request_count(self) -> int:
        with self._lock:
            return sum(len(c.requests) for c in self.connections)

    def wait_requests(self, count: int, timeout: float = 5.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while self.request_count() < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests()

    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self.connections if not c.closed)

    def reset(self) -> None:
        """Forget closed connections and every request recorded so far."""
        with self._lock:
            self.connections = [c for c in self.connections if not c.closed]
            for conn in self.connections:
                conn.requests.clear()
                conn.received.clear()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @contextlib.contextmanager
    def start_in_thread(self) -> Iterator[RawOrigin]:
        """Run on a loop of its own in a daemon thread; stopped when the block ends."""
        ready = threading.Event()
        stop: list[asyncio.Event] = []
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            stop.append(asyncio.Event())
            ready.set()
            await stop[0].wait()
            await self.close()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            if self._loop is not None and stop:
                self._loop.call_soon_threadsafe(stop[0].set)
            thread.join(10)

    # --- one connection -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        with self._lock:
            conn = Connection(len(self.connections) + 1, f"{peer[0]}:{peer[1]}" if peer else "?")
            self.connections.append(conn)
        pending = bytearray()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                with self._lock:
                    conn.received += data
                pending += data
                while True:
                    try:
                        parsed = parse_one(bytes(pending))
                    except Malformed as exc:
                        conn.error = str(exc)
                        writer.write(_response(400, b"raw-origin: malformed request\n"))
                        await writer.drain()
                        return
                    if parsed is None:
                        break
                    request, used = parsed
                    del pending[:used]
                    with self._lock:
                        conn.requests.append(request)
                    if self.echo:
                        self._echo(conn, request)
                    if not await self._answer(request, reader, writer):
                        return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            conn.closed = True
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    def _echo(self, conn: Connection, request: Request) -> None:
        line = {
            "conn": conn.id,
            "method": request.method,
            "target": request.target,
            "raw_b64": base64.b64encode(request.raw).decode(),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    async def _answer(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Send the answer `request` asks for; False when the connection is done."""
        parts = urlsplit(request.target)
        segment = parts.path.split("/")[1] if "/" in parts.path else ""
        query = parse_qs(parts.query)
        if segment == "reflect":
            cc = unquote(query.get("cc", ["public, max-age=60"])[0])
            headers = [("Content-Type", "application/octet-stream")]
            if cc:
                headers.append(("Cache-Control", cc))
            writer.write(_response(200, request.raw, headers))
        elif segment.startswith("account"):
            cc = unquote(query.get("cc", ["private, max-age=60"])[0])
            who = f"cookie={request.header('Cookie')} auth={request.header('Authorization')}"
            body = f"account page: {who} path={parts.path}\n".encode("latin-1")
            writer.write(
                _response(200, body, [("Content-Type", "text/plain"), ("Cache-Control", cc)])
            )
        elif segment == "chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                b"Cache-Control: no-store\r\n\r\n"
                b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"
            )
        elif segment == "status":
            status = int(parts.path.split("/")[2])
            writer.write(_response(status, b"raw-origin status\n", [("Cache-Control", "no-store")]))
        elif segment == "invalid":
            writer.write(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
        elif segment == "garbage":
            writer.write(b"this is not http\r\n\r\n")
        elif segment == "inject-cr":
            writer.write(
                b"HTTP/1.1 200 OK\r\nX-Injected: a\rSet-Cookie: evil=1\r\n"
                b"Content-Length: 2\r\n\r\nok"
            )
        elif segment == "inject-nul":
            writer.write(b"HTTP/1.1 200 OK\r\nX-Injected: a\x00b\r\nContent-Length: 2\r\n\r\nok")
        elif segment == "hang":
            await reader.read()  # until the peer closes
            return False
        elif segment == "close":
            writer.close()
            return False
        elif segment == "reset":
            _reset(writer)
            return False
        elif segment == "reset-mid-body":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n"
                b"Cache-Control: public, max-age=60\r\n\r\n" + b"x" * 5000
            )
            await writer.drain()
            await asyncio.sleep(0.05)
            _reset(writer)
            return False
        elif segment == "forever":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n"
            )
            chunk = b"400\r\n" + b"f" * 1024 + b"\r\n"
            while not writer.transport.is_closing():
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.02)
            return False
        elif segment == "slow-headers":
            delay = int(query.get("delay_ms", ["1000"])[0]) / 1000
            writer.write(b"HTTP/1.1 200 OK\r\n")
            await writer.drain()
            await asyncio.sleep(delay)
            writer.write(b"Content-Length: 2\r\nCache-Control: no-store\r\n\r\nok")
        else:
            writer.write(
                _response(
                    200, OK_BODY, [("Content-Type", "text/plain"), ("Cache-Control", "no-store")]
                )
            )
        await writer.drain()
        return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m openflare_testsite.raw_origin",
        description="Raw-bytes recording origin for OpenFlare's framing tests.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)

    async def run() -> None:
        origin = RawOrigin(args.host, args.port, echo=True)
        await origin.start()
        sys.stderr.write(f"raw origin listening on {origin.url}\n")
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
