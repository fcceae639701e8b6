"""A stored response and the arithmetic on it (age, remaining freshness, staleness)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from multidict import CIMultiDict

from openflare.cache.policy import current_age

# What an entry really costs in memory besides the bytes of its body, key, header block and
# tags, measured with tracemalloc over CacheEntry objects held by the memory store (CPython
# 3.11, 64-bit; see docs/03-cache.md "Stores"): the entry object with its float fields (the
# reason string is interned: "OK" is one string for all), its body's bytes object, its key
# string and its LRU slot
ENTRY_BYTES = 469
# the header block's bytes object (none for an entry without headers: b"" is shared)
BLOCK_BYTES = 65
# one tag: the string and its slot in the tag index (a set per tag)
TAG_BYTES = 321
STR_BYTES = 49  # a str object besides its characters (a second key string, a Vary name)
# A Vary variant: its second key string, its slot in the per-URL variant index and (for the
# first variant of a URL) that index and the URL's Vary names entry
VARIANT_BYTES = 485
# How long past expiry an entry is kept for clients that accept stale (max-stale) or for a
# conditional request; the LRU bounds still apply.
STALE_GRACE_SECONDS = 60.0
VALIDATABLE_GRACE_SECONDS = 3600.0

# What aiohttp refuses in a header name or value (`http_writer._FORBIDDEN_HEADER_CHARS_RE`):
# a stored line holding one of these could never be sent, so it is not stored.
FORBIDDEN_HEADER_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# `CacheEntry.defaults`: which of the headers aiohttp adds when they are missing the block
# holds, and whether it holds validators (read from the block when a request needs them)
HAS_DATE = 1
HAS_SERVER = 2
HAS_CONTENT_TYPE = 4
HAS_ETAG = 8
HAS_LAST_MODIFIED = 16
_DEFAULT_FLAGS = (
    (b"\ndate:", HAS_DATE),
    (b"\nserver:", HAS_SERVER),
    (b"\ncontent-type:", HAS_CONTENT_TYPE),
    (b"\netag:", HAS_ETAG),
    (b"\nlast-modified:", HAS_LAST_MODIFIED),
)


def render_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    """The stored header block: one `Name: value\r\n` line per header, in order, UTF-8 (as
    aiohttp encodes headers). A line aiohttp would refuse to send (a control character) is
    left out."""
    lines = [
        f"{name}: {value}\r\n"
        for name, value in headers
        if FORBIDDEN_HEADER_CHARS.search(name) is None
        and FORBIDDEN_HEADER_CHARS.search(value) is None
    ]
    return "".join(lines).encode("utf-8", "surrogateescape")


def parse_headers(block: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of a header block, in order (what `render_headers` was given)."""
    pairs: list[tuple[str, str]] = []
    for line in block.decode("utf-8", "surrogateescape").split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            pairs.append((name, value))
    return pairs


def header_flags(block: bytes) -> int:
    """The `HAS_*` flags of the headers `block` holds (an empty validator is none)."""
    lowered = b"\n" + block.lower()
    flags = sum(flag for line_start, flag in _DEFAULT_FLAGS if line_start in lowered)
    if flags & HAS_ETAG and not first_value(block, "ETag"):
        flags &= ~HAS_ETAG
    if flags & HAS_LAST_MODIFIED and not first_value(block, "Last-Modified"):
        flags &= ~HAS_LAST_MODIFIED
    return flags


def first_value(block: bytes, name: str) -> str | None:
    """The value of the first `name` line in `block` (any case), or None."""
    start = (b"\n" + block.lower()).find(b"\n" + name.lower().encode() + b":")
    if start < 0:
        return None
    line = block[start : block.index(b"\r\n", start)]
    return line.partition(b":")[2].strip().decode("utf-8", "surrogateescape")


def without_headers(block: bytes, names: Iterable[str]) -> bytes:
    """`block` minus every line whose name is one of `names` (any case)."""
    drop = tuple(name.lower().encode() + b":" for name in names)
    lines = block.split(b"\r\n")
    return b"".join(line + b"\r\n" for line in lines if line and not line.lower().startswith(drop))


def holds_any(block: bytes, names: Iterable[str]) -> list[str]:
    """Those of `names` (exact spelling kept) that `block` has a line for, any case."""
    lowered = b"\n" + block.lower()
    return [name for name in names if b"\n" + name.lower().encode() + b":" in lowered]


@dataclass(slots=True)
class CacheEntry:
    key: str  # storage key of this variant
    primary: str  # the URL key all variants of this resource share
    status: int
    reason: str
    # the stored headers as one block of `Name: value\r\n` lines (`render_headers`): hop-by-hop,
    # Set-Cookie and the headers the edge sets per answer removed; written out as it is
    headers: bytes
    body: bytes
    request_time: float
    response_time: float
    date_value: float | None
    age_value: float
    lifetime: float
    stale_while_revalidate: float
    stale_if_error: float
    must_revalidate: bool
    no_cache: bool
    auth_shareable: bool  # stored from a response that allows answering Authorization requests
    vary: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    freshness_source: str = "none"
    invalidated: bool = False  # soft purge: kept for stale serving, never fresh again
    hits: int = 0
    size: int = field(default=0)
    # the HAS_* flags: derived from `headers`, never passed in
    defaults: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.defaults = header_flags(self.headers)
        if not self.size:
            self.size = memory_cost(self)

    @property
    def etag(self) -> str | None:
        """The stored ETag (read from the block: one string less per entry)."""
        return first_value(self.headers, "ETag") if self.defaults & HAS_ETAG else None

    @property
    def last_modified(self) -> str | None:
        if not self.defaults & HAS_LAST_MODIFIED:
            return None
        return first_value(self.headers, "Last-Modified")

    @property
    def validatable(self) -> bool:
        """An ETag or Last-Modified is stored: a conditional request can revalidate it."""
        return bool(self.defaults & (HAS_ETAG | HAS_LAST_MODIFIED))

    def header_map(self) -> CIMultiDict[str]:
        """The stored headers as a new multidict (explanations, revalidation: off the hot path)."""
        return CIMultiDict(parse_headers(self.headers))

    def age(self, now: float) -> float:
        return current_age(
            age_value=self.age_value,
            date_value=self.date_value,
            request_time=self.request_time,
            response_time=self.response_time,
            now=now,
        )

    def effective_lifetime(self) -> float:
        return 0.0 if self.invalidated else self.lifetime

    def ttl(self, now: float) -> float:
        """Remaining freshness in seconds (negative once stale)."""
        return self.effective_lifetime() - self.age(now)

    def staleness(self, now: float) -> float:
        return max(0.0, -self.ttl(now))

    def keep_until(self) -> float:
        """Wall time after which the entry is useless even for stale serving or validation."""
        extra = max(self.stale_while_revalidate, self.stale_if_error, STALE_GRACE_SECONDS)
        if self.validatable:
            extra = max(extra, VALIDATABLE_GRACE_SECONDS)  # worth a conditional request
        return self.response_time + self.lifetime + extra

    def useful(self) -> bool:
        """Worth storing: fresh for a while, servable stale, or able to be revalidated."""
        return bool(
            self.lifetime > 0
            or self.validatable
            or self.stale_while_revalidate > 0
            or self.stale_if_error > 0
        )

    def soft_purged(self) -> CacheEntry:
        return replace(self, invalidated=True)


def memory_cost(entry: CacheEntry) -> int:
    """The bytes `entry` holds in the memory store, computed from its own body, key, header
    block, tags and Vary names (what `cache.max_bytes` counts)."""
    size = len(entry.body) + ENTRY_BYTES + len(entry.primary)
    if entry.headers:
        size += BLOCK_BYTES + len(entry.headers)
    if entry.key != entry.primary:  # a Vary variant: its key is a second string
        size += VARIANT_BYTES + len(entry.key)
    for tag in entry.tags:
        size += TAG_BYTES + len(tag)
    for name in entry.vary:
        size += STR_BYTES + 8 + len(name)
    return size
