"""Helpers shared by the route modules."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import JSONResponse

from .state import stamp_of

KIB = 1024
MIB = 1024 * KIB

#: 64-byte pattern that every generated body repeats (``/large``, ``/stream/chunked``, ...).
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"
assert len(PATTERN) == 64
_BLOCK = PATTERN * 4096  # 256 KiB, a multiple of the pattern length
BLOCK_SIZE = len(_BLOCK)

GET_HEAD = ["GET", "HEAD"]


def json_response(
    request: Request,
    data: Mapping[str, Any],
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """JSON body with ``ts``/``seq`` equal to this response's ``X-Origin-Time``/``-Seq``."""
    stamp = stamp_of(request)
    body: dict[str, Any] = {"ts": stamp.ts, "seq": stamp.seq}
    body.update(data)
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


def valid_header_value(value: str) -> bool:
    """Sendable as an HTTP/1.1 field value: latin-1 encodable, no CR, LF or NUL."""
    if any(ch in value for ch in "\r\n\x00"):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    """Parse an IMF-fixdate (or obsolete format) into epoch seconds; ``None`` if invalid."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


_ETAG_RE = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag.removeprefix("W/")


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison of an ``If-None-Match`` field value against ``etag``.

    Handles ``*`` and comma separated lists (also several header lines joined by ``,``).
    """
    value = if_none_match.strip()
    if value == "*":
        return True
    wanted = _opaque(etag)
    pos = 0
    while pos < len(value):
        match = _ETAG_RE.match(value, pos)
        if match is None:
            # Skip one malformed element (up to the next comma) and keep going.
            comma = value.find(",", pos)
            if comma < 0:
                break
            pos = comma + 1
            continue
        if match.group(1) == wanted:
            return True
        pos = match.end()
    return False


def is_not_modified(
    request: Request, etag: str | None = None, last_modified: float | None = None
) -> bool:
    """Evaluate ``If-None-Match`` (precedence) then ``If-Modified-Since`` for GET/HEAD."""
    if request.method not in ("GET", "HEAD"):
        return False
    inm_values = request.headers.getlist("if-none-match")
    if inm_values:
        return etag is not None and etag_matches(", ".join(inm_values), etag)
    if last_modified is None:
        return False
    since = parse_http_date(request.headers.get("if-modified-since"))
    return since is not None and int(last_modified) <= since


def pattern_bytes(size: int) -> bytes:
    """The first ``size`` bytes of the endless repetition of :data:`PATTERN`."""
    full, rest = divmod(size, BLOCK_SIZE)
    return _BLOCK * full + _BLOCK[:rest]


def pattern_chunks(size: int, chunk_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield the pattern body of ``size`` bytes in chunks (``chunk_size`` multiple of 64)."""
    assert chunk_size % len(PATTERN) == 0 and 0 < chunk_size <= BLOCK_SIZE
    remaining = size
    while remaining > 0:
        n = min(chunk_size, remaining)
        yield _BLOCK[:n]
        remaining -= n


@functools.lru_cache(maxsize=128)
def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


async def pattern_sha256_async(size: int) -> str:
    """Like :func:`pattern_sha256` but off the event loop for big bodies."""
    if size <= 8 * MIB:
        return pattern_sha256(size)
    return await asyncio.to_thread(pattern_sha256, size)


async def sleep_unless_disconnected(request: Request, seconds: float) -> bool:
    """Sleep ``seconds``; return early (``False``) when the client disconnects.

    Only for requests whose body is not needed any more (it is drained here).
    """

    async def wait_disconnect() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(wait_disconnect())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=max(seconds, 0.0))
        return not done
    finally:
        watcher.cancel()


def query_multi(request: Request) -> dict[str, str | list[str]]:
    """Query arguments; a name given more than once maps to the list of its values."""
    result: dict[str, str | list[str]] = {}
    for key, value in request.query_params.multi_items():
        existing = result.get(key)
        if existing is None:
            result[key] = value
        elif isinstance(existing, list):
            existing.append(value)
        else:
            result[key] = [existing, value]
    return result


def headers_dict(request: Request) -> dict[str, str]:
    """Request headers as a dict; repeated names are joined with ``", "``."""
    result: dict[str, str] = {}
    for name, value in request.headers.items():
        result[name] = f"{result[name]}, {value}" if name in result else value
    return result


def header_pairs(request: Request) -> list[list[str]]:
    return [
        [name.decode("latin-1"), value.decode("latin-1")] for name, value in request.headers.raw
    ]


def _add_field(fields: dict[str, Any], key: str, value: Any) -> None:
    existing = fields.get(key)
    if key not in fields:
        fields[key] = value
    elif isinstance(existing, list):
        existing.append(value)
    else:
        fields[key] = [existing, value]


def parse_fields(content_type: str, body: bytes) -> tuple[str, Any]:
    """Decode a request body into ``(kind, fields)`` without python-multipart.

    ``kind`` is ``json``, ``form`` (urlencoded), ``multipart``, ``empty`` or ``raw``
    (``fields`` is then the body as text). Repeated form fields become lists; uploaded files
    become ``{"filename", "content_type", "size", "sha256"}``.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return "empty", {}
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            return "json", json.loads(body)
        except ValueError:
            return "raw", body.decode("utf-8", "replace")
    if ctype == "application/x-www-form-urlencoded":
        fields: dict[str, Any] = {}
        text = body.decode("utf-8", "replace")
        for key, value in parse_qsl(text, keep_blank_values=True, encoding="utf-8"):
            _add_field(fields, key, value)
        return "form", fields
    if ctype == "multipart/form-data":
        return "multipart", _parse_multipart(content_type, body)
    return "raw", body.decode("utf-8", "replace")


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    # Imported lazily: the email package costs ~40 ms of start-up time.
    import email.policy
    from email.parser import BytesParser

    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    fields: dict[str, Any] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        value: Any
        if filename is not None:
            value = {
                "filename": filename,
                "content_type": part.get_content_type(),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        else:
            value = data.decode(part.get_content_charset() or "utf-8", "replace")
        _add_field(fields, name, value)
    return fields
