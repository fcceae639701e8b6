"""The WAF's fast paths give exactly what the general path gives.

`Inspection.strings` (the raw text a view's memo is keyed on) must equal the strings of
`Inspection.values` for every target, with and without a body; the cache-rule memo must answer
what the rule scan answers.
"""

from __future__ import annotations

import json

import pytest

from openflare.waf.targets import TARGETS, Inspection

REQUESTS = [
    ("GET", "/static/app.js", None, []),
    ("GET", "/search?q=a%20b&q=c&empty=&flag", None, [("Cookie", 'sid=1; theme="dark"')]),
    ("GET", "/x%zz/../y?bad=%G1", None, [("Range", "bytes=0-1"), ("Range", "bytes=2-3")]),
    ("HEAD", "/é?ü=1", None, [("User-Agent", "  "), ("X-Many", "a"), ("x-many", "b")]),
    (
        "POST",
        "/api/orders?debug=1",
        json.dumps({"items": [{"sku": "A", "q": 2}], "note": "x"}).encode(),
        [("Content-Type", "application/json"), ("Cookie", "a=1;b=2")],
    ),
    (
        "POST",
        "/form",
        b"name=value&other=%3Cscript%3E&name=again",
        [("Content-Type", "application/x-www-form-urlencoded")],
    ),
    ("POST", "/raw", b"\x00\xffnot text", [("Content-Type", "application/octet-stream")]),
]
NAMED = ["header:host", "header:range", "header:x-many", "header:absent", "cookie:sid", "arg:q"]


def inspection(method: str, target: str, body: bytes | None, extra: list[tuple[str, str]]):
    path, _, query = target.partition("?")
    headers = [("Host", "example.com"), ("Accept", "*/*"), *extra]
    return Inspection(
        method=method,
        raw_target=target,
        path=path,
        query=query,
        headers=headers,
        client_ip="198.51.100.7",
        body=body,
        body_size=len(body or b""),
    )


@pytest.mark.parametrize(("method", "target", "body", "extra"), REQUESTS)
@pytest.mark.parametrize("cached_first", [False, True])
def test_strings_are_the_values_strings(method, target, body, extra, cached_first) -> None:
    for name in sorted(TARGETS) + NAMED:
        fresh = inspection(method, target, body, extra)
        reference = [value for _, _, value in inspection(method, target, body, extra).values(name)]
        if cached_first:
            fresh.values(name)  # the tuples already built: strings reads them
        assert fresh.strings(name) == reference, name


def test_cache_rule_memo_answers_what_the_scan_answers() -> None:
    from openflare.cache.matcher import MATCH_MEMO_MAX, CacheRuleMatcher
    from openflare.cache.rules import CacheRules
    from openflare.config.models import CacheConfig

    rules = CacheRules.model_validate(
        {
            "rules": [
                {"id": "static", "path_prefix": "/static/", "methods": ["GET"], "cache": {}},
                {"id": "re", "path_regex": "^/v/(a|b)$", "cache": {"eligible": False}},
                {"id": "exact", "path_exact": "/", "cache": {"ttl_seconds": 5}},
            ]
        }
    )
    matcher = CacheRuleMatcher(rules, CacheConfig())
    paths = ["/", "/static/x", "/v/a", "/v/b", "/v/c", "/other", "/static/x"]
    for method in ("GET", "HEAD", "GET"):
        for path in paths:
            assert matcher.match(path, method) is matcher._scan(path, method)
    for n in range(MATCH_MEMO_MAX + 10):  # the memo stays bounded
        matcher.match(f"/p{n}", "GET")
    assert len(matcher._memo) <= MATCH_MEMO_MAX
    assert matcher.match("/v/a", "GET").rule_id == "re"
