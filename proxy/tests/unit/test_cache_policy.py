import math

import pytest
from cache_factories import entry as cache_entry
from multidict import CIMultiDict, CIMultiDictProxy

from openflare.cache.control import DELTA_SECONDS_MAX, parse_cache_control
from openflare.cache.policy import (
    RequestDirectives,
    current_age,
    freshness,
    http_date,
    normalize_accept_encoding,
    response_cache_control,
    reuse,
    storable_reason,
    vary_names,
    vary_value,
)

NOW = 1_800_000_000.0
DATE = "Fri, 15 Jan 2027 08:00:00 GMT"  # = 1800000000


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    ("values", "name", "seconds"),
    [
        (["max-age=60"], "max-age", 60),
        (["Max-Age=60"], "max-age", 60),
        (["public, max-age=60, s-maxage=120"], "s-maxage", 120),
        (["max-age=60", "max-age=60"], "max-age", 60),  # identical duplicates are harmless
        (["max-age=60, max-age=30"], "max-age", 0),  # conflicting duplicates: stale
        (["max-age=abc"], "max-age", 0),
        (["max-age=-5"], "max-age", 0),
        (["max-age=1.5"], "max-age", 0),
        (['max-age="60"'], "max-age", 60),
        (["max-age=99999999999999999999"], "max-age", DELTA_SECONDS_MAX),
        (["max-age"], "max-age", 0),
        (["no-cache"], "max-age", None),
        ([""], "max-age", None),
    ],
)
def test_delta_seconds(values: list[str], name: str, seconds: int | None) -> None:
    assert parse_cache_control(values).seconds(name) == seconds


@pytest.mark.parametrize(
    ("value", "present"),
    [
        ('no-cache="Set-Cookie, X-Foo", max-age=5', {"no-cache", "max-age"}),
        ("private, no-store", {"private", "no-store"}),
        (" , ,public,,", {"public"}),
        ('ext="a,b\\"c", max-age=1', {"ext", "max-age"}),
        ("\x00weird=\x01, max-age=2", {"\x00weird", "max-age"}),
    ],
)
def test_directive_names(value: str, present: set[str]) -> None:
    assert set(parse_cache_control([value]).directives) == present


@pytest.mark.parametrize(
    "garbage",
    ['"', "=,=,=", "max-age=\u00e9", 'a="unterminated, b', "\\\\\\", "a" * 10000, ',=,"\\'],
)
def test_parser_never_raises(garbage: str) -> None:
    parse_cache_control([garbage]).seconds("max-age")


def test_targeted_cdn_cache_control_wins() -> None:
    cc = response_cache_control(
        headers(("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60"))
    )
    assert "no-store" not in cc and cc.seconds("max-age") == 60
    plain = response_cache_control(headers(("Cache-Control", "max-age=5")))
    assert plain.seconds("max-age") == 5


def fresh(
    cc: str,
    *extra: tuple[str, str],
    rule_ttl: int | None = None,
    origin_wins: bool = True,
    heuristic: bool = False,
    status: int = 200,
) -> tuple[float, str]:
    h = headers(("Date", DATE), *((("Cache-Control", cc),) if cc else ()), *extra)
    result = freshness(
        response_cache_control(h),
        h,
        NOW,
        status=status,
        rule_ttl=rule_ttl,
        origin_wins=origin_wins,
        heuristic=heuristic,
    )
    return result.lifetime, result.source


@pytest.mark.parametrize(
    ("cc", "extra", "kwargs", "expected"),
    [
        ("max-age=60", (), {}, (60, "max-age")),
        ("max-age=60, s-maxage=10", (), {}, (10, "s-maxage")),
        ("", (("Expires", "Fri, 15 Jan 2027 08:01:40 GMT"),), {}, (100, "expires")),
        ("", (("Expires", "0"),), {}, (0, "expires")),  # invalid Expires: already expired
        ("max-age=5", (("Expires", "Fri, 15 Jan 2027 09:00:00 GMT"),), {}, (5, "max-age")),
        ("", (), {"rule_ttl": 30}, (30, "rule")),
        ("max-age=5", (), {"rule_ttl": 30}, (5, "max-age")),  # origin wins by default
        ("max-age=5", (), {"rule_ttl": 30, "origin_wins": False}, (30, "rule")),
        ("", (), {}, (0, "none")),
        (
            "",
            (("Last-Modified", "Fri, 15 Jan 2027 07:00:00 GMT"),),
            {"heuristic": True},
            (360, "heuristic"),
        ),
        ("", (("Last-Modified", "Fri, 15 Jan 2027 07:00:00 GMT"),), {}, (0, "none")),
        (
            "",
            (("Last-Modified", "Fri, 15 Jan 2027 07:00:00 GMT"),),
            {"heuristic": True, "status": 302},
            (0, "none"),
        ),
    ],
)
def test_freshness_lifetime(
    cc: str,
    extra: tuple[tuple[str, str], ...],
    kwargs: dict[str, object],
    expected: tuple[float, str],
) -> None:
    assert fresh(cc, *extra, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cc", "swr", "sie"),
    [
        ("max-age=1, stale-while-revalidate=30, stale-if-error=60", 30, 60),
        ("max-age=1, stale-while-revalidate=30, must-revalidate", 0, 0),
        ("max-age=1, stale-if-error=60, proxy-revalidate", 0, 0),
        ("max-age=1", 0, 0),
    ],
)
def test_stale_windows(cc: str, swr: int, sie: int) -> None:
    h = headers(("Cache-Control", cc))
    result = freshness(
        response_cache_control(h),
        h,
        NOW,
        status=200,
        rule_ttl=None,
        origin_wins=True,
        heuristic=False,
    )
    assert (result.stale_while_revalidate, result.stale_if_error) == (swr, sie)


@pytest.mark.parametrize(
    ("age_value", "date_value", "request_time", "response_time", "now", "expected"),
    [
        (0, NOW, NOW, NOW, NOW, 0),
        (0, NOW, NOW, NOW, NOW + 10, 10),  # resident time
        (30, NOW, NOW, NOW, NOW + 10, 40),  # Age from an upstream cache
        (0, NOW - 5, NOW, NOW, NOW, 5),  # apparent age from the Date
        (0, NOW + 50, NOW, NOW, NOW, 0),  # a Date in the future is not a negative age
        (10, NOW, NOW - 2, NOW, NOW, 12),  # response delay added to the Age value
        (0, None, NOW, NOW, NOW + 3, 3),
    ],
)
def test_current_age(
    age_value: float,
    date_value: float | None,
    request_time: float,
    response_time: float,
    now: float,
    expected: float,
) -> None:
    assert (
        current_age(
            age_value=age_value,
            date_value=date_value,
            request_time=request_time,
            response_time=response_time,
            now=now,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("status", "cc", "extra", "auth", "rule_ttl", "set_cookie_ok", "reason"),
    [
        (200, "max-age=60", (), False, None, False, None),
        (200, "no-store, max-age=60", (), False, None, False, "no-store"),
        (200, "private, max-age=60", (), False, None, False, "private"),
        (200, "max-age=60", (), True, None, False, "authorization"),
        (200, "public, max-age=60", (), True, None, False, None),
        (200, "s-maxage=60", (), True, None, False, None),
        (200, "must-revalidate, max-age=60", (), True, None, False, None),
        (200, "max-age=60", (("Vary", "Accept, *"),), False, None, False, "vary-star"),
        (200, "max-age=60", (("Set-Cookie", "a=1"),), False, None, False, "set-cookie"),
        (200, "max-age=60", (("Set-Cookie", "a=1"),), False, None, True, None),
        (200, "", (), False, None, False, "no-freshness"),
        (200, "", (("ETag", '"x"'),), False, None, False, None),
        (299, "", (("ETag", '"x"'),), False, None, False, "no-freshness"),
        (299, "max-age=60", (), False, None, False, None),
        (200, "", (), False, 30, False, None),
        (206, "max-age=60", (), False, None, False, "status"),
        (304, "max-age=60", (), False, None, False, "status"),
        (999, "max-age=60", (), False, None, False, "status"),
        (404, "max-age=60", (), False, None, False, None),
        (200, "no-cache", (("ETag", '"x"'),), False, None, False, None),
    ],
)
def test_storable(
    status: int,
    cc: str,
    extra: tuple[tuple[str, str], ...],
    auth: bool,
    rule_ttl: int | None,
    set_cookie_ok: bool,
    reason: str | None,
) -> None:
    h = headers(*((("Cache-Control", cc),) if cc else ()), *extra)
    assert (
        storable_reason(
            status=status,
            request_cc=parse_cache_control([]),
            response_cc=response_cache_control(h),
            headers=h,
            has_authorization=auth,
            rule_ttl=rule_ttl,
            store_set_cookie=set_cookie_ok,
        )
        == reason
    )


def test_request_no_store_prevents_storing() -> None:
    h = headers(("Cache-Control", "max-age=60"))
    assert (
        storable_reason(
            status=200,
            request_cc=parse_cache_control(["no-store"]),
            response_cc=response_cache_control(h),
            headers=h,
            has_authorization=False,
            rule_ttl=None,
            store_set_cookie=False,
        )
        == "no-store"
    )


@pytest.mark.parametrize(
    ("request_headers", "age", "lifetime", "no_cache", "reusable"),
    [
        ((), 10, 60, False, True),
        ((), 60, 60, False, False),
        ((("Cache-Control", "no-cache"),), 0, 60, False, False),
        ((("Pragma", "no-cache"),), 0, 60, False, False),
        ((("Cache-Control", "max-age=0"),), 1, 60, False, False),
        ((("Cache-Control", "max-age=20"),), 10, 60, False, True),
        ((("Cache-Control", "max-age=5"),), 10, 60, False, False),
        ((("Cache-Control", "min-fresh=30"),), 40, 60, False, False),
        ((("Cache-Control", "min-fresh=30"),), 20, 60, False, True),
        ((("Cache-Control", "max-stale=30"),), 80, 60, False, True),
        ((("Cache-Control", "max-stale=10"),), 80, 60, False, False),
        ((("Cache-Control", "max-stale"),), 10_000, 60, False, True),
        ((), 0, 60, True, False),  # response no-cache: always revalidate
    ],
)
def test_reuse(
    request_headers: tuple[tuple[str, str], ...],
    age: float,
    lifetime: float,
    no_cache: bool,
    reusable: bool,
) -> None:
    directives = RequestDirectives.parse(headers(*request_headers))
    entry = cache_entry(lifetime=float(lifetime), no_cache=no_cache)
    assert (reuse(entry, age, directives) == "fresh") is reusable  # more: test_cache_reuse.py


def test_request_directives() -> None:
    d = RequestDirectives.parse(headers(("Cache-Control", "only-if-cached, max-stale")))
    assert d.only_if_cached and d.max_stale == math.inf and not d.no_cache


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        ("gzip, deflate, br", "br,deflate,gzip"),
        ("br;q=0.9, gzip", "br,gzip"),
        ("gzip;q=0, br", "br"),
        ("identity", "identity"),
        ("", "identity"),
        ("*", "br,deflate,gzip,zstd"),
        ("x-unknown, GZIP", "gzip"),
        ("gzip;q=abc", "identity"),
    ],
)
def test_accept_encoding(value: str, normalized: str) -> None:
    assert normalize_accept_encoding(value) == normalized


def test_vary_names_and_values() -> None:
    h = headers(("Vary", "Accept-Encoding, accept-language"), ("Vary", "X-A"))
    assert vary_names(h) == ("accept-encoding", "accept-language", "x-a")
    req = headers(("Accept-Language", "en,   fr"), ("Accept-Encoding", "gzip"))
    assert vary_value("accept-language", req) == "en, fr"
    assert vary_value("accept-encoding", req) == "gzip"
    assert vary_value("x-a", req) == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (DATE, NOW),
        ("Friday, 15-Jan-27 08:00:00 GMT", NOW),
        ("nonsense", None),
        (None, None),
        ("Fri, 15 Jan 2027 08:00:00", None),
    ],
)
def test_http_date(value: str | None, expected: float | None) -> None:
    assert http_date(value) == expected
