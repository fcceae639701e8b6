"""A stored response and the arithmetic on it (age, remaining freshness, staleness)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

from multidict import CIMultiDict

from openflare.cache.policy import current_age

# What an entry really costs in memory besides the bytes of its body, key, header block and
# tags, measured with tracemalloc over CacheEntry objects held by the memory store (CPython
# 3.11, 64-bit; see docs/03-cache.md "Stores"): the entry object (160) with its one float of
# its own (`born`; whole-second lifetimes are shared floats, the reason string is interned:
# "OK" is one string for all), its body's bytes object, its key string and its LRU slot
ENTRY_BYTES = 341
# the header block's bytes object (none for an entry without headers: b"" is shared)
BLOCK_BYTES = 33
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


# `CacheEntry` flags (one small int: ints below 257 are shared objects, so it costs its slot)
NO_CACHE = 1
MUST_REVALIDATE = 2
AUTH_SHAREABLE = 4
INVALIDATED = 8

# Whole numbers of seconds (lifetimes, stale-while-revalidate, stale-if-error: max-age=3600
# gives 3600.0 to every entry) are shared float objects, as `sys.intern` shares strings: a
# float is 24 bytes of its own. Bounded: past that many distinct values, floats are not shared.
SHARED_SECONDS_MAX = 1024
_shared_seconds: dict[float, float] = {}


def shared_seconds(value: float) -> float:
    """`value` as a float, the same object for every equal whole number of seconds."""
    value = float(value)
    shared = _shared_seconds.get(value)
    if shared is not None:
        return shared
    if value.is_integer() and len(_shared_seconds) < SHARED_SECONDS_MAX:
        _shared_seconds[value] = value
    return value


class CacheEntry:
    """A stored response, built from what the origin answered (the RFC 9111 §4.2.3 inputs:
    `request_time`, `response_time`, `date_value`, `age_value`).

    It keeps only what serving and storing read, in as few objects as a slotted object
    allows: the four time inputs become one float, `born` (the wall time at which the
    response had age 0: `response_time` minus its corrected initial age), the four booleans
    one small int (`_flags`), and `size` is computed from the entry's own parts when the store
    asks. An entry is never changed once built, except its `hits` counter.
    """

    __slots__ = (
        "key",
        "primary",
        "status",
        "reason",
        "headers",
        "body",
        "defaults",
        "hits",
        "born",
        "lifetime",
        "stale_while_revalidate",
        "stale_if_error",
        "freshness_source",
        "vary",
        "tags",
        "_flags",
    )
    key: str  # storage key of this variant
    primary: str  # the URL key all variants of this resource share
    status: int
    reason: str
    # the stored headers as one block of `Name: value\r\n` lines (`render_headers`): hop-by-hop,
    # Set-Cookie and the headers the edge sets per answer removed; written out as it is
    headers: bytes
    body: bytes
    defaults: int  # the HAS_* flags: derived from `headers`
    hits: int
    born: float  # wall time at age 0
    lifetime: float
    stale_while_revalidate: float
    stale_if_error: float
    freshness_source: str
    vary: tuple[str, ...]
    tags: tuple[str, ...]
    _flags: int  # NO_CACHE | MUST_REVALIDATE | AUTH_SHAREABLE | INVALIDATED

    def __init__(
        self,
        *,
        key: str,
        primary: str,
        status: int,
        reason: str,
        headers: bytes,
        body: bytes,
        request_time: float,
        response_time: float,
        date_value: float | None,
        age_value: float,
        lifetime: float,
        stale_while_revalidate: float,
        stale_if_error: float,
        must_revalidate: bool,
        no_cache: bool,
        auth_shareable: bool,  # stored from a response that allows answering Authorization
        vary: tuple[str, ...] = (),
        tags: tuple[str, ...] = (),
        freshness_source: str = "none",
        invalidated: bool = False,  # soft purge: kept for stale serving, never fresh again
        hits: int = 0,
    ) -> None:
        self.key = key
        self.primary = key if primary == key else primary  # one string when they are equal
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.defaults = header_flags(headers)
        self.hits = hits
        initial_age = current_age(  # at arrival: the corrected initial age (RFC 9111 §4.2.3)
            age_value=age_value,
            date_value=date_value,
            request_time=request_time,
            response_time=response_time,
            now=response_time,
        )
        self.born = response_time - initial_age
        self.lifetime = shared_seconds(lifetime)
        self.stale_while_revalidate = shared_seconds(stale_while_revalidate)
        self.stale_if_error = shared_seconds(stale_if_error)
        self.freshness_source = sys.intern(freshness_source)
        self.vary = vary
        self.tags = tags
        self._flags = (
            (NO_CACHE if no_cache else 0)
            | (MUST_REVALIDATE if must_revalidate else 0)
            | (AUTH_SHAREABLE if auth_shareable else 0)
            | (INVALIDATED if invalidated else 0)
        )

    def __repr__(self) -> str:
        return (
            f"CacheEntry(key={self.key!r}, status={self.status}, born={self.born}, "
            f"lifetime={self.lifetime}, flags={self._flags}, size={self.size})"
        )

    @property
    def no_cache(self) -> bool:
        return bool(self._flags & NO_CACHE)

    @property
    def must_revalidate(self) -> bool:
        return bool(self._flags & MUST_REVALIDATE)

    @property
    def auth_shareable(self) -> bool:
        """Stored from a response that allows answering Authorization requests (RFC 9111 §3.5)."""
        return bool(self._flags & AUTH_SHAREABLE)

    @property
    def invalidated(self) -> bool:
        """Soft purged: kept for stale serving, never fresh again."""
        return bool(self._flags & INVALIDATED)

    @property
    def size(self) -> int:
        """What the entry holds in the memory store (`memory_cost`)."""
        return memory_cost(self)

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
        """RFC 9111 §4.2.3: the corrected initial age plus the time since the response arrived
        (never below 0 should the wall clock step back)."""
        age = now - self.born
        return age if age > 0.0 else 0.0

    def effective_lifetime(self) -> float:
        return 0.0 if self._flags & INVALIDATED else self.lifetime

    def ttl(self, now: float) -> float:
        """Remaining freshness in seconds (negative once stale)."""
        return self.effective_lifetime() - self.age(now)

    def staleness(self, now: float) -> float:
        return max(0.0, -self.ttl(now))

    def keep_until(self) -> float:
        """Wall time after which the entry is useless even for stale serving or validation."""
        # an entry that can be revalidated is worth a conditional request for longer
        extra = (
            VALIDATABLE_GRACE_SECONDS
            if self.defaults & (HAS_ETAG | HAS_LAST_MODIFIED)
            else STALE_GRACE_SECONDS
        )
        if self.stale_while_revalidate > extra:
            extra = self.stale_while_revalidate
        if self.stale_if_error > extra:
            extra = self.stale_if_error
        return self.born + self.lifetime + extra

    def useful(self) -> bool:
        """Worth storing: fresh for a while, servable stale, or able to be revalidated."""
        return bool(
            self.lifetime > 0
            or self.validatable
            or self.stale_while_revalidate > 0
            or self.stale_if_error > 0
        )

    def soft_purged(self) -> CacheEntry:
        """A copy marked invalidated (its hits kept)."""
        copy = object.__new__(CacheEntry)
        for name in CacheEntry.__slots__:
            setattr(copy, name, getattr(self, name))
        copy._flags = self._flags | INVALIDATED
        return copy


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
