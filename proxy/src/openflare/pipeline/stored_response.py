"""The answer from a stored response, its header block written as stored (the pre-rendered HIT).

A `web.Response` for a cache entry would copy the stored headers into a new multidict on every
answer and have aiohttp validate and serialize them again. `StoredResponse` keeps the entry's
header block (`Name: value\\r\\n` lines, validated when stored) and writes the status line, the
headers this answer adds (`headers`: Age, Cache-Status, X-Request-ID, the limiter's, debug and
trace headers, then Content-Length, Date, Content-Type, Connection as aiohttp adds them), the
block, and the body. The output is what aiohttp sends for the same header set, in another order
(RFC 9110 §5.3 only orders the lines of one field name):

- a header this answer sets replaces the stored lines of that name (`Server-Timing` is added
  next to them, as `DecisionTrace.apply_headers` adds it); a stored `Server`, `Date` or
  `Content-Type` is kept and none is added (`holds_server` tells `finalize_headers`);
- `Content-Length` as `web.Response` sets it: kept on a HEAD answer that sends no body, none on
  204/304; `Connection: keep-alive` for a kept-alive HTTP/1.0 request, `close` for a closing
  HTTP/1.1 one.

`Exchange.send` writes it with `send_now`: the whole answer, head and body, in one transport
write, without aiohttp's `prepare` / `write_eof` path (about 20 µs less per HIT; docs/12). The
response is then marked sent, so aiohttp's own `prepare` and `write_eof` after the handler do
nothing. `prepare` still works as before for any other caller.

It relies on aiohttp 3.14 internals (tests/unit/test_stored_response.py fails if they change
shape): `prepare` calls `_start(request)` once `_must_be_empty_body` is set, the request's
`_payload_writer`, `StreamWriter.write_headers` leaving the serialized head in `_headers_buf`
until `write_eof` sends it with the body in one write, `_serialize_headers` (the C serializer
`write_headers` uses, which refuses control characters), `StreamWriter._write` (counts the
bytes and refuses a closing transport) and `_eof` / `_eof_sent`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time, should_remove_content_length
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_writer import StreamWriter, _serialize_headers

from openflare.cache.entry import (
    HAS_CONTENT_TYPE,
    HAS_DATE,
    HAS_SERVER,
    holds_any,
    without_headers,
)

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

    from openflare.pipeline.inline import LeanRequest

# Names an answer sets that a stored block never holds (removed when storing, hop-by-hop) or
# sets only when the block lacks them: no need to look for them in the block.
NEVER_IN_BLOCK = frozenset(
    {
        "age",
        "cache-status",
        "x-request-id",
        "content-length",
        "connection",
        "server",
        "date",
        "content-type",
    }
)
# Added next to the stored lines of that name, not instead of them.
ADDED_NEXT_TO_STORED = frozenset({"server-timing"})


class StoredResponse(web.StreamResponse):
    """A stored response answered from the cache: `headers` holds only what this answer adds."""

    def __init__(self, status: int, reason: str | None, block: bytes, defaults: int, body: bytes):
        super().__init__(status=status, reason=reason)
        self._block = block  # the entry's header block (or a 304's cut of it)
        self._defaults = defaults  # the block's HAS_* flags (CacheEntry.defaults)
        self._stored_body = body

    @property
    def body(self) -> bytes:
        return self._stored_body

    @property
    def body_bytes_sent(self) -> int:
        """The body bytes `send_now` writes: none for HEAD, 1xx, 204 and 304."""
        return 0 if self._must_be_empty_body else len(self._stored_body)

    @property
    def holds_server(self) -> bool:
        return bool(self._defaults & HAS_SERVER)

    def send_now(self, request: web.BaseRequest | LeanRequest) -> None:
        """Write the whole answer (status line, headers, block, body) in one transport write and
        mark it sent. Raises ConnectionResetError when the client is gone."""
        writer = request._payload_writer
        assert isinstance(writer, StreamWriter)
        self._must_be_empty_body = must_be_empty_body(request.method, self._status)
        block = self._complete_headers(request, writer)
        version = request.version
        head = _serialize_headers(
            f"HTTP/{version[0]}.{version[1]} {self._status} {self._reason}", self._headers
        )
        body = b"" if self._must_be_empty_body else self._stored_body
        if block:  # the head ends with an empty line: the block goes in before it
            writer._write(b"".join((head[:-2], block, b"\r\n", body)))
        else:
            writer._write(head + body if body else head)
        writer._eof = True
        self._eof_sent = True  # aiohttp's prepare / write_eof after the handler: nothing to do

    async def _start(self, request: web.BaseRequest) -> AbstractStreamWriter:
        self._req = request
        writer = self._payload_writer = request._payload_writer
        block = self._complete_headers(request, writer)
        await request._prepare_hook(self)
        version = request.version
        await writer.write_headers(
            f"HTTP/{version[0]}.{version[1]} {self._status} {self._reason}", self._headers
        )
        if block:  # the head ends with an empty line: the block goes in before it
            head = writer._headers_buf  # type: ignore[attr-defined]
            writer._headers_buf = head[:-2] + block + b"\r\n"  # type: ignore[attr-defined]
        return writer

    def _complete_headers(
        self, request: web.BaseRequest | LeanRequest, writer: AbstractStreamWriter
    ) -> bytes:
        """Add the headers aiohttp would add (Content-Length, Content-Type, Date, Server,
        Connection) unless the block holds them; returns the block to write, without the
        lines of a name this answer sets."""
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        headers = self._headers
        block = self._block
        if block and len(headers) > 3:  # more than Age, Cache-Status, X-Request-ID: the names
            replaced = [
                name
                for name in headers
                if (lower := name.lower()) not in NEVER_IN_BLOCK
                and lower not in ADDED_NEXT_TO_STORED
            ]
            if replaced and (clashes := holds_any(block, replaced)):
                block = self._block = without_headers(block, clashes)
        status = self._status
        body = self._stored_body
        method = request.method
        if (body or method != hdrs.METH_HEAD) and not should_remove_content_length(method, status):
            headers[hdrs.CONTENT_LENGTH] = str(len(body))
            writer.length = len(body)
        else:
            writer.length = 0
        defaults = self._defaults
        if body and not self._must_be_empty_body and not defaults & HAS_CONTENT_TYPE:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if not defaults & HAS_DATE and hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        if not defaults & HAS_SERVER:
            headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        if hdrs.CONNECTION not in headers:
            version = request.version
            if keep_alive:
                if version == HttpVersion10:
                    headers[hdrs.CONNECTION] = "keep-alive"
            elif version == HttpVersion11:
                headers[hdrs.CONNECTION] = "close"
        return block

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        if self._must_be_empty_body:
            await super().write_eof()
        else:
            await super().write_eof(self._stored_body)


class RenderedResponse(StoredResponse):
    """An answer whose body is known whole and whose headers are set as on any response: a
    refusal or an error the edge makes itself (403, 429, 413, 502 …), or a relayed answer whose
    body arrived with its headers. It is written in one call as a HIT is (`send_now`), so a
    refusal is answered inline too (pipeline/inline.py)."""

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        reason: str | None = None,
    ) -> None:
        super().__init__(status, reason, b"", 0, body)
        self._headers.extend(headers)
