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


# ---- the whole-request memo, the joined-text verification, and the transforms and body walk
# that got a fast path: each against its general (previous) form

import string  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402
import waf_reference  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from openflare.waf import bodies, transforms  # noqa: E402
from openflare.waf.compile import _context_free  # noqa: E402
from openflare.waf.engine import evaluate  # noqa: E402
from openflare.waf.rules import WafRules  # noqa: E402


def _ruleset(*conditions: dict[str, Any], **file: Any) -> Any:
    rules = [
        {"id": f"r{n}", "match": {"any": [condition]}, "action": {"type": "block"}}
        for n, condition in enumerate(conditions)
    ]
    return WafRules.model_validate({"rules": rules, **file}).compiled


def _summary(verdict: Any) -> tuple[Any, ...]:
    return (
        verdict.decision,
        verdict.status,
        verdict.score,
        verdict.bypass_cache,
        [(m.rule.id, m.action, m.target, m.excerpt) for m in verdict.matches],
    )


def test_request_memo_replays_the_decision_with_fresh_matches() -> None:
    ruleset = _ruleset(
        {"target": ["args"], "contains": "attack"},
        {"target": ["headers"], "contains": "probe"},
        excerpt_chars=32,
    )
    make = lambda: inspection("GET", "/a?q=attack", None, [("X-Test", "probe")])  # noqa: E731
    first = evaluate(ruleset, make())
    assert first.decision == "block"
    assert len(ruleset.request_memo) == 1
    first.matches[0].action = "changed by a caller"
    again = evaluate(ruleset, make())
    assert _summary(again) == _summary(evaluate(ruleset, make()))
    assert [m.action for m in again.matches] == ["block", "block"]
    assert again.matches[0] is not first.matches[0]
    shadow = evaluate(ruleset, make(), route_shadow=True)  # the route's mode is not in the key
    assert shadow.decision == "would_block"
    assert {m.action for m in shadow.matches} == {"would_block"}
    other = evaluate(ruleset, inspection("GET", "/a?q=attack", None, [("X-Test", "fine")]))
    assert [m.rule.id for m in other.matches] == ["r0"]
    assert evaluate(ruleset, inspection("GET", "/a?q=fine", None, [])).decision == "pass"
    assert len(ruleset.request_memo) == 3


def test_request_memo_skips_bodies_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from openflare.waf import engine

    ruleset = _ruleset({"target": ["args"], "contains": "attack"})
    evaluate(ruleset, inspection("POST", "/f", b"q=attack", [("Content-Type", FORM)]))
    assert not ruleset.request_memo
    evaluate(ruleset, inspection("GET", "/?q=" + "x" * engine.REQUEST_MEMO_MAX_CHARS, None, []))
    assert not ruleset.request_memo  # too long to remember
    monkeypatch.setattr(engine, "REQUEST_MEMO_MAX_ENTRIES", 4)
    for n in range(10):
        assert evaluate(ruleset, inspection("GET", f"/?n={n}", None, [])).decision == "pass"
        assert len(ruleset.request_memo) <= 4
    assert evaluate(ruleset, inspection("GET", "/?q=attack", None, [])).decision == "block"


FORM = "application/x-www-form-urlencoded"
# Patterns whose whole-text match runs across a line break, starts on one, is empty, sits at a
# line's end, or anchors to the text (verified value by value then)
SCAN_PATTERNS = [
    r"[;|&\n\r]\s*(?:id|cat)\b",
    r"<a[^>]*>",
    r"(?s)b.*c",
    r"x*",
    r"c$",
    r"^a",
    r"\bid\b",
    r"é+c",
    r"\Aa",
    r"b\z",
    r"(?-m)^a",
]
scan_text = st.lists(
    st.sampled_from(["a", "b", "c", "id", "cat", "<a", ">", "\n", ";", " ", "é", "x", "%0a"]),
    max_size=8,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(scan_text, min_size=1, max_size=7), st.sampled_from([1, 4]))
@example(["a", "id", "b<a", "x>c"], 1)
def test_joined_text_verification_finds_what_value_by_value_finds(
    values: list[str], excerpt: int
) -> None:
    ruleset = _ruleset(
        *({"target": ["args"], "regex": pattern} for pattern in SCAN_PATTERNS),
        {"target": ["args"], "phrases": ["id", "é"]},
        excerpt_chars=excerpt,
        anomaly_threshold=1000,
    )
    query = "&".join(f"v{n}={value.replace('&', '%26')}" for n, value in enumerate(values))

    def make() -> Inspection:
        return inspection("GET", "/p?" + query, None, [])

    expected = _summary(waf_reference.evaluate(ruleset, make()))
    assert _summary(evaluate(ruleset, make())) == expected
    ruleset.request_memo.clear()
    assert _summary(evaluate(ruleset, make())) == expected


def test_patterns_tied_to_the_text_edges_are_verified_value_by_value() -> None:
    assert _context_free(r"(?m)[;|&\n\r]\s*id\b")
    assert _context_free(r"(?m)(?i)union\s+select")
    for pattern in (r"(?m)\Aa", r"(?m)a\z", r"(?m)(?-m)^a", r"(?m)(?i-m:a$)"):
        assert not _context_free(pattern)
    ruleset = _ruleset({"target": ["args"], "regex": r"\Ab"}, {"target": ["args"], "regex": "b"})
    assert ruleset.rules[0].any[0].scan is None
    assert ruleset.rules[1].any[0].scan is not None
    verdict = evaluate(ruleset, inspection("GET", "/?x=bc&y=b", None, []))
    assert [(m.rule.id, m.target) for m in verdict.matches] == [("r0", "arg:x"), ("r1", "arg:x")]


def _base64_by_line(value: str) -> str:
    """base64_decode as it was: every line of at least MIN_BASE64_CHARS checked."""
    if len(value) < transforms.MIN_BASE64_CHARS:
        return value
    found: list[str] = []
    for line in value.split("\n"):
        if len(line) >= transforms.MIN_BASE64_CHARS:
            found.extend(transforms._base64_line(line))
    return value + "\n" + "\n".join(found) if found else value


B64_PIECES = [
    "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "dW5pb24gc2VsZWN0IHBhc3N3b3Jk",
    "Y2F0IC9ldGMvcGFzc3dk",
    "YWRtaW4=",
    "MTIzNDU2Nzg5MA==",
    "LS0tLS0tLS0",
    "Basic ",
    "abcd efgh ",
    "QUJD REVG",
    "12345678",
    "36153492",  # digits alone that decode to printable text
    "050+0743",
    "+/+/+/+/",
    "--__--__",
    "Hello World",
    "lower case words ",
    "UPPER CASE",
    "/",
    ".",
    " ",
    "\t",
    "\n",
    "é",
    "\u00a0",
    "\u3000",
]
b64_text = st.lists(
    st.one_of(st.sampled_from(B64_PIECES), st.text(string.printable, max_size=10)), max_size=10
).map("".join)


@settings(max_examples=500, deadline=None)
@given(b64_text)
@example("aaaa bbbb\nQUJD REVG\n  YWRtaW4=  \n0000 1111")
@example("lower 36153492\nid=050+0743;x")
def test_base64_decode_checks_only_candidate_lines(value: str) -> None:
    assert transforms.base64_decode(value) == _base64_by_line(value)
    assert transforms._base64_candidate_lines("a\ud800\nb") == ["a\ud800", "b"]


SPACE_PIECES = ["a", "bc", " ", "  ", " \n ", "\n", "\t", "\r", "\x0b", "\xa0", "\u2028", "\x00"]


def _compress_by_line(value: str) -> str:
    if value.isalnum():
        return value
    return "\n".join([" ".join(line.split()) for line in value.split("\n")])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(SPACE_PIECES), max_size=12).map("".join))
def test_compress_whitespace_fast_path_is_line_by_line(value: str) -> None:
    assert transforms.compress_whitespace(value) == _compress_by_line(value)


def _walk_json_stack(document: Any, data: bodies.BodyData, max_depth: int, left: int) -> None:
    """The JSON walk as it was: one explicit stack for the whole document."""
    stack: list[tuple[str, Any, int]] = [("", document, 0)]
    while stack and left > 0:
        name, node, depth = stack.pop()
        if isinstance(node, str):
            data.values.append((bodies.JSON, name, node))
            left -= 1
        elif isinstance(node, dict):
            if depth >= max_depth:
                data.flags.add("json_too_deep")
                continue
            for key, value in node.items():
                data.names.append((bodies.JSON, key))
                left -= 1
                stack.append((key, value, depth + 1))
        elif isinstance(node, list):
            if depth >= max_depth:
                data.flags.add("json_too_deep")
                continue
            stack.extend((name, item, depth + 1) for item in reversed(node))
        elif node is not None and not isinstance(node, bool):
            data.values.append((bodies.JSON, name, str(node)))
            left -= 1


json_documents = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=30,
)


def _walks(document: Any, max_depth: int, max_values: int) -> None:
    new, old = bodies.BodyData(), bodies.BodyData()
    bodies._walk_json(document, new, max_depth, max_values)
    _walk_json_stack(document, old, max_depth, max_values)
    assert (new.values, new.names, new.flags) == (old.values, old.names, old.flags)


@settings(max_examples=400, deadline=None)
@given(json_documents, st.integers(1, 6), st.integers(1, 40))
def test_json_walk_is_the_stack_walk(document: Any, max_depth: int, max_values: int) -> None:
    _walks(orjson.loads(orjson.dumps(document)), max_depth, max_values)


@pytest.mark.parametrize("levels", [bodies.JSON_RECURSION_DEPTH - 1, 100, 400])
def test_json_walk_goes_deep_without_recursing(levels: int) -> None:
    document: Any = "leaf"
    for level in range(levels):
        document = {f"k{level}": [document, level, "s"]}
    for max_depth in (30, 64, 1024):
        _walks(document, max_depth, 10_000)
        _walks(document, max_depth, 150)
