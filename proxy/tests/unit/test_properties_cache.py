"""Properties of the cache's pure parts: keys (cache/key.py) are stable under query reordering
and distinct for different normalized paths; the Cache-Control parser (cache/control.py) and the
policy functions built on it never raise, whatever the header text."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from openflare.cache.control import INVALID, parse_cache_control, parse_delta_seconds
from openflare.cache.key import KeyPolicy, variant_key
from openflare.cache.policy import (
    RequestDirectives,
    freshness,
    response_cache_control,
    storable_reason,
)
from openflare.config.models import NormalizationConfig
from openflare.pipeline.normalize import PathRejected, normalize_path

NAMES = st.text(alphabet="abcxyz_-.[]", min_size=1, max_size=6)
VALUES = st.text(alphabet="abc019 %&=+;/?é", max_size=8)
PAIRS = st.lists(st.tuples(NAMES, VALUES), max_size=6)
POLICIES = st.sampled_from(
    [
        KeyPolicy(),
        KeyPolicy(ignore_query=("utm_*", "b")),
        KeyPolicy(only_query=("a*", "x")),
        KeyPolicy(headers=("Accept-Language",), cookies=("lang",)),
    ]
)
HEADERS = CIMultiDict({"Accept-Language": "en", "Cookie": "lang=fr; other=1"})


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


@settings(max_examples=500, deadline=None)
@given(pairs=PAIRS, data=st.data(), policy=POLICIES)
def test_key_is_stable_under_query_reordering(
    pairs: list[tuple[str, str]], data: st.DataObject, policy: KeyPolicy
) -> None:
    shuffled = data.draw(st.permutations(pairs))
    first = policy.primary("http", "example.test", "/p", _query(pairs), HEADERS)
    second = policy.primary("http", "Example.TEST", "/p", _query(shuffled), HEADERS)
    assert first == second


PATH_PIECES = st.sampled_from(
    ["/", "a", "b", "%2F", "%3F", "%23", "%25", ";", ".", "..", "%2e", "é", "~", "%7E", "#", "?"]
)
RAW_PATHS = st.lists(PATH_PIECES, max_size=8).map(lambda parts: "/" + "".join(parts))


def _normalized(raw: str) -> str | None:
    # the normalize stage splits the target at the first '?' and refuses '#' before this
    if "?" in raw or "#" in raw:
        return None
    try:
        return normalize_path(raw, NormalizationConfig(reject_encoded_slash=False))
    except PathRejected:
        return None


@settings(max_examples=800, deadline=None)
@given(a=RAW_PATHS, b=RAW_PATHS, qa=PAIRS, qb=PAIRS, policy=POLICIES)
def test_keys_differ_for_different_normalized_paths(
    a: str, b: str, qa: list[tuple[str, str]], qb: list[tuple[str, str]], policy: KeyPolicy
) -> None:
    path_a, path_b = _normalized(a), _normalized(b)
    if path_a is None or path_b is None or path_a == path_b:
        return
    key_a = policy.primary("http", "h", path_a, _query(qa), HEADERS)
    key_b = policy.primary("http", "h", path_b, _query(qb), HEADERS)
    assert key_a != key_b  # whatever the queries, a path never shares another path's entry


@settings(max_examples=300, deadline=None)
@given(path=RAW_PATHS, pairs=PAIRS)
def test_equivalent_raw_paths_share_a_key(path: str, pairs: list[tuple[str, str]]) -> None:
    """Escaping an unreserved character does not make a new entry."""
    normalized = _normalized(path)
    if normalized is None:
        return
    escaped = "".join(f"%{ord(c):02X}" if c in "ab~" else c for c in normalized)
    assert _normalized(escaped) == normalized
    policy = KeyPolicy()
    assert policy.primary("http", "h", normalized, _query(pairs), HEADERS) == policy.primary(
        "http", "h", _normalized(escaped) or "", _query(pairs), HEADERS
    )


HEADER_TEXT = st.text(max_size=80) | st.lists(
    st.sampled_from(
        [
            "max-age",
            "=",
            "s-maxage",
            "no-cache",
            '"',
            ",",
            " ",
            "private",
            "no-store",
            "public",
            "stale-while-revalidate",
            "-1",
            "0",
            "99999999999999999999",
            "3600",
            '="a,b"',
            "\\",
            "\t",
            ";",
            "must-revalidate",
            "max-stale",
            "min-fresh",
            "é",
        ]
    ),
    max_size=12,
).map("".join)


@settings(max_examples=1500, deadline=None)
@given(values=st.lists(HEADER_TEXT, max_size=3))
def test_cache_control_parser_never_raises(values: list[str]) -> None:
    cc = parse_cache_control(values)
    for name in ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "min-fresh"):
        seconds = cc.seconds(name)
        assert seconds is None or seconds >= 0
        assert cc.seconds_or_default(name, 7) >= 0
    _ = cc.empty
    headers = CIMultiDict([("Cache-Control", v) for v in values])
    headers.add("Expires", values[0] if values else "")
    headers.add("Age", values[-1] if values else "")
    RequestDirectives.parse(headers)
    response_cc = response_cache_control(headers)
    storable_reason(
        status=200,
        request_cc=cc,
        response_cc=response_cc,
        headers=headers,
        has_authorization=False,
        rule_ttl=None,
        store_set_cookie=False,
    )
    fresh = freshness(
        response_cc,
        headers,
        1_700_000_000.0,
        status=200,
        rule_ttl=None,
        origin_wins=True,
        heuristic=True,
    )
    assert fresh.lifetime >= 0


@given(st.text(max_size=30) | st.none())
def test_delta_seconds_never_raises(value: str | None) -> None:
    seconds = parse_delta_seconds(value)
    assert seconds == INVALID or 0 <= seconds <= 2**31


@settings(max_examples=300, deadline=None)
@given(vary=st.lists(st.text(max_size=12), max_size=4), value=st.text(max_size=20))
def test_variant_key_never_raises(vary: list[str], value: str) -> None:
    headers = CIMultiDict([(name, value) for name in vary if name.strip()])
    key = variant_key("http://h/p", tuple(vary), headers)
    assert key.startswith("http://h/p")
