"""RFC 9111 policy as pure functions: what may be stored, for how long, how old it is, and
whether a stored response may answer a request. No I/O here; the cache stage calls these.

Terms follow RFC 9111: freshness lifetime (§4.2.1), current age (§4.2.3), stale serving
extensions (RFC 5861), targeted CDN-Cache-Control (RFC 9213).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Literal

from multidict import MultiMapping

from openflare.cache.control import EMPTY, CacheControl, parse_cache_control

if TYPE_CHECKING:
    from openflare.cache.entry import CacheEntry

# RFC 9110 §15.1: cacheable by default (heuristic freshness allowed)
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# Final statuses this cache stores at all (206 and 304 are never stored as new entries).
UNDERSTOOD_STATUSES = frozenset(range(200, 600)) - {206, 304}
HEURISTIC_FRACTION = 0.1  # RFC 9111 §4.2.2: 10% of the time since Last-Modified
HEURISTIC_MAX = 86_400


def http_date(value: str | None) -> float | None:
    """An HTTP-date as a POSIX timestamp, or None when absent or invalid."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None  # HTTP dates are always GMT; a zone-less date is not one
    return parsed.timestamp()


def response_cache_control(headers: MultiMapping[str]) -> CacheControl:
    """The directives this shared cache obeys: CDN-Cache-Control when present (RFC 9213 §2.1:
    a targeted field replaces Cache-Control for the caches it targets), else Cache-Control."""
    cdn = headers.getall("CDN-Cache-Control", [])
    plain = headers.getall("Cache-Control", [])
    if cdn:
        targeted = parse_cache_control(cdn)
        if not targeted.empty:
            return targeted
    return parse_cache_control(plain) if plain else EMPTY


@dataclass(frozen=True, slots=True)
class Freshness:
    lifetime: float  # seconds the response is fresh for (0 = stale at once)
    source: str  # s-maxage | max-age | expires | rule | heuristic | none
    stale_while_revalidate: float
    stale_if_error: float


def freshness(
    cc: CacheControl,
    headers: MultiMapping[str],
    response_time: float,
    *,
    status: int,
    rule_ttl: int | None,
    origin_wins: bool,
    heuristic: bool,
    default_swr: int = 0,
    default_sie: int = 0,
) -> Freshness:
    """Freshness lifetime for a shared cache: s-maxage > max-age > Expires − Date; a rule TTL
    for responses without explicit freshness (or instead of it when the rule says so);
    heuristic freshness from Last-Modified only when enabled."""
    lifetime: float | None = None
    source = "none"
    if origin_wins or rule_ttl is None:
        if (value := cc.seconds("s-maxage")) is not None:
            lifetime, source = value, "s-maxage"
        elif (value := cc.seconds("max-age")) is not None:
            lifetime, source = value, "max-age"
        elif "Expires" in headers:
            expires = http_date(headers.get("Expires"))
            date = http_date(headers.get("Date")) or response_time
            lifetime = max(0.0, expires - date) if expires is not None else 0.0
            source = "expires"
    if lifetime is None and rule_ttl is not None:
        lifetime, source = float(rule_ttl), "rule"
    if lifetime is None and heuristic and status in HEURISTIC_STATUSES:
        last_modified = http_date(headers.get("Last-Modified"))
        date = http_date(headers.get("Date")) or response_time
        if last_modified is not None and last_modified < date:
            lifetime = min(HEURISTIC_MAX, (date - last_modified) * HEURISTIC_FRACTION)
            source = "heuristic"
    if lifetime is None:
        lifetime = 0.0
    revalidate_only = "must-revalidate" in cc or "proxy-revalidate" in cc or "no-cache" in cc
    swr = 0 if revalidate_only else cc.seconds_or_default("stale-while-revalidate", default_swr)
    sie = 0 if revalidate_only else cc.seconds_or_default("stale-if-error", default_sie)
    return Freshness(float(lifetime), source, float(swr), float(sie))


def has_explicit_freshness(cc: CacheControl, headers: MultiMapping[str]) -> bool:
    return "s-maxage" in cc or "max-age" in cc or "public" in cc or "Expires" in headers


def storable_reason(
    *,
    status: int,
    request_cc: CacheControl,
    response_cc: CacheControl,
    headers: MultiMapping[str],
    has_authorization: bool,
    rule_ttl: int | None,
    store_set_cookie: bool,
) -> str | None:
    """None when the response may be stored; otherwise the reason it may not (RFC 9111 §3)."""
    if status not in UNDERSTOOD_STATUSES:
        return "status"
    if "no-store" in request_cc or "no-store" in response_cc:
        return "no-store"
    if "private" in response_cc:
        return "private"
    if has_authorization and not (
        "public" in response_cc or "s-maxage" in response_cc or "must-revalidate" in response_cc
    ):
        return "authorization"  # §3.5
    vary = headers.getall("Vary", [])
    if any("*" in value for value in vary):
        return "vary-star"
    if "Set-Cookie" in headers and not store_set_cookie:
        return "set-cookie"
    if has_explicit_freshness(response_cc, headers) or rule_ttl is not None:
        return None
    # storable by status (§3); only worth it when it can be validated or heuristically fresh
    if status in HEURISTIC_STATUSES and ("ETag" in headers or "Last-Modified" in headers):
        return None
    return "no-freshness"


def current_age(
    *,
    age_value: float,
    date_value: float | None,
    request_time: float,
    response_time: float,
    now: float,
) -> float:
    """RFC 9111 §4.2.3."""
    apparent_age = max(
        0.0, response_time - (date_value if date_value is not None else response_time)
    )
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - response_time)
    return corrected_initial_age + resident_time


def parse_age(value: str | None) -> float:
    if value is None:
        return 0.0
    value = value.split(",")[0].strip()
    return float(min(int(value), 2_147_483_648)) if value.isdigit() else 0.0


# --- request side ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    no_cache: bool  # no-cache, max-age=0 or Pragma: no-cache: revalidate before reuse
    no_store: bool
    only_if_cached: bool
    max_age: int | None
    max_stale: float | None  # None: not allowed; inf: any staleness
    min_fresh: int

    @classmethod
    def parse(cls, headers: MultiMapping[str]) -> RequestDirectives:
        values = headers.getall("Cache-Control", [])
        if not values:
            pragma = headers.get("Pragma", "")
            return NO_REQUEST_DIRECTIVES_PRAGMA if "no-cache" in pragma.lower() else NO_DIRECTIVES
        cc = parse_cache_control(values)
        max_stale: float | None = None
        if "max-stale" in cc:
            raw = cc.directives["max-stale"]
            max_stale = (
                float("inf") if raw is None else float(cc.seconds_or_default("max-stale", 0))
            )
        max_age = cc.seconds("max-age")
        return cls(
            no_cache="no-cache" in cc or max_age == 0,
            no_store="no-store" in cc,
            only_if_cached="only-if-cached" in cc,
            max_age=max_age,
            max_stale=max_stale,
            min_fresh=cc.seconds_or_default("min-fresh", 0),
        )


NO_DIRECTIVES = RequestDirectives(False, False, False, None, None, 0)
NO_REQUEST_DIRECTIVES_PRAGMA = RequestDirectives(True, False, False, None, None, 0)


# What a stored response may do for a request before the origin is asked (`reuse`). The cache
# stage acts on it and an explain dry run (pipeline/cache_explain.py) reports it, so the
# prediction cannot drift from what a live request does:
#   fresh                   answer from the cache (HIT; 304 for a matching client validator)
#   stale-while-revalidate  answer stale (STALE) and refresh once in the background (RFC 5861)
#   only-if-cached          not reusable and the client forbids asking the origin: 504
#   validate                ask the origin (a conditional request)
Reuse = Literal["fresh", "stale-while-revalidate", "only-if-cached", "validate"]


def reuse(entry: CacheEntry, age: float, request: RequestDirectives) -> Reuse:
    """The `Reuse` of `entry`, `age` seconds old (`entry.age(now)`), for a request with these
    directives (§4.2 freshness, §5.2.1 request directives, RFC 5861). This is on every cache
    HIT: the arithmetic is written out rather than spread over helper calls."""
    lifetime = entry.effective_lifetime()
    validate_first = request.no_cache or entry.no_cache  # never reused unvalidated
    if not validate_first and (request.max_age is None or age <= request.max_age):
        remaining = lifetime - age
        if remaining - request.min_fresh > 0:
            return "fresh"
        if (  # max-stale: the client accepts it this stale (only once it had been fresh)
            request.max_stale is not None
            and lifetime > 0
            and -remaining <= request.max_stale
            and request.min_fresh == 0
        ):
            return "fresh"
    if request.only_if_cached:
        return "only-if-cached"
    staleness = age - lifetime
    if (
        not validate_first
        and not entry.must_revalidate
        and 0 < staleness <= entry.stale_while_revalidate
    ):
        return "stale-while-revalidate"
    return "validate"


def may_serve_stale_on_error(entry: CacheEntry, request: RequestDirectives, now: float) -> bool:
    """After the origin failed (or answered 5xx): may `entry` answer instead (RFC 5861
    stale-if-error, or a request's max-stale)?"""
    if entry.must_revalidate:
        return False
    staleness = entry.staleness(now)
    if request.max_stale is not None and staleness <= request.max_stale:
        return True
    return staleness <= entry.stale_if_error


# --- Vary ----------------------------------------------------------------------------------------

KNOWN_CODINGS = ("br", "deflate", "gzip", "zstd")


def normalize_accept_encoding(value: str) -> str:
    """Accept-Encoding reduced to the codings the cache tells apart, sorted (q=0 excluded)."""
    accepted: set[str] = set()
    wildcard = False
    for item in value.lower().split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip()
        q = 1.0
        for param in params.split(";"):
            name, _, number = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(number)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if coding == "*":
            wildcard = True
        elif coding in KNOWN_CODINGS:
            accepted.add(coding)
    if wildcard:
        accepted.update(KNOWN_CODINGS)
    return ",".join(sorted(accepted)) or "identity"


def vary_names(headers: MultiMapping[str]) -> tuple[str, ...]:
    names: set[str] = set()
    for value in headers.getall("Vary", []):
        for name in value.split(","):
            name = name.strip().lower()
            if name:
                names.add(name)
    return tuple(sorted(names))


def vary_value(name: str, headers: MultiMapping[str]) -> str:
    values = headers.getall(name, [])
    joined = ",".join(" ".join(v.split()) for v in values)
    if name == "accept-encoding":
        return normalize_accept_encoding(joined)
    return joined
