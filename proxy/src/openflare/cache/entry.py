"""A stored response and the arithmetic on it (age, remaining freshness, staleness)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from multidict import CIMultiDict

from openflare.cache.policy import current_age

# What an entry really costs in memory besides the characters of its body, key, headers and
# tags, measured with tracemalloc over CacheEntry objects held by the memory store with their
# header map built (CPython 3.11, 64-bit; see docs/03-cache.md "Stores"):
# the entry object, its body's bytes header, its key string, the LRU slot and the variant, URL
# and Vary index entries, an empty header map
ENTRY_BYTES = 1125
# one stored header: the (name, value) tuple, both strings, its header-map item (lowercased name)
HEADER_BYTES = 270
# one tag: the string and its slot in the tag index (a set per tag)
TAG_BYTES = 313
STR_BYTES = 49  # a str object besides its characters (a second key string, a Vary name)
# How long past expiry an entry is kept for clients that accept stale (max-stale) or for a
# conditional request; the LRU bounds still apply.
STALE_GRACE_SECONDS = 60.0
VALIDATABLE_GRACE_SECONDS = 3600.0


@dataclass(slots=True)
class CacheEntry:
    key: str  # storage key of this variant
    primary: str  # the URL key all variants of this resource share
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # as stored: hop-by-hop and Set-Cookie removed
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
    etag: str | None = None
    last_modified: str | None = None
    freshness_source: str = "none"
    invalidated: bool = False  # soft purge: kept for stale serving, never fresh again
    hits: int = 0
    size: int = field(default=0)
    _header_map: CIMultiDict[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.size:
            self.size = memory_cost(self)

    def header_map(self) -> CIMultiDict[str]:
        """The stored headers as a multidict, built once; copy it before changing it."""
        if self._header_map is None:
            self._header_map = CIMultiDict(self.headers)
        return self._header_map

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
        if self.etag or self.last_modified:
            extra = max(extra, VALIDATABLE_GRACE_SECONDS)  # worth a conditional request
        return self.response_time + self.lifetime + extra

    def useful(self) -> bool:
        """Worth storing: fresh for a while, servable stale, or able to be revalidated."""
        return bool(
            self.lifetime > 0
            or self.etag
            or self.last_modified
            or self.stale_while_revalidate > 0
            or self.stale_if_error > 0
        )

    def soft_purged(self) -> CacheEntry:
        return replace(self, invalidated=True, _header_map=None)


def memory_cost(entry: CacheEntry) -> int:
    """The bytes `entry` holds in the memory store, computed from its own body, key, headers,
    tags and Vary names (what `cache.max_bytes` counts)."""
    size = len(entry.body) + ENTRY_BYTES + len(entry.primary)
    if entry.key != entry.primary:  # a Vary variant: its key is a second string
        size += STR_BYTES + len(entry.key)
    for name, value in entry.headers:
        size += HEADER_BYTES + len(name) + len(value)
    for tag in entry.tags:
        size += TAG_BYTES + len(tag)
    for name in entry.vary:
        size += STR_BYTES + 8 + len(name)
    return size
