"""The WAF engine decides exactly what it decided before its per-request work was cut down.

`waf_reference.py` is the engine's evaluation as it was (a frozen copy: per-value results
recomputed value by value on a hit, verification through `re2.compile(...).search`). Over the
whole evaluation corpus, at paranoia 1 and 4, and over requests hypothesis builds from the
pieces encodings and rules care about, both give the same decision, status, score, matched
rules (ids, actions, targets, excerpts) and cache bypass — cold, with the engine's memos
warm (a bodyless repeat is answered by the whole-request memo), and with only the views'
memos warm. The transform that changed shape (`remove_comments`) is checked against its previous
form, and the fact the engine now relies on is a property: a chain's per-value results are the
lines of its joined result whenever the line counts agree.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import waf_reference
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from waf_corpus import attack_requests, benign_requests, inspection

from openflare.waf import transforms
from openflare.waf.compile import Ruleset
from openflare.waf.engine import Verdict, evaluate
from openflare.waf.rules import WafRules
from openflare.waf.targets import Inspection
from openflare.waf.transforms import TRANSFORMS, apply_chain

PACK = Path(__file__).resolve().parents[3] / "configs" / "rules.waf.yaml"


def _load(**overrides: Any) -> Ruleset:
    data = yaml.safe_load(PACK.read_text())
    data.update(overrides)
    return WafRules.model_validate(data).compiled


RULESET = _load()
RULESET_PL4 = _load(paranoia=4, excerpt_chars=200)


def summary(verdict: Verdict) -> tuple[Any, ...]:
    return (
        verdict.decision,
        verdict.status,
        verdict.score,
        verdict.bypass_cache,
        [(m.rule.id, m.rule.score, m.action, m.target, m.excerpt) for m in verdict.matches],
    )


def assert_same(ruleset: Ruleset, make: Any, *, route_shadow: bool = False) -> Verdict:
    expected = summary(waf_reference.evaluate(ruleset, make(), route_shadow=route_shadow))
    first = evaluate(ruleset, make(), route_shadow=route_shadow)
    assert summary(first) == expected
    again = evaluate(ruleset, make(), route_shadow=route_shadow)  # memos warm now
    assert summary(again) == expected
    ruleset.request_memo.clear()  # the views' memos alone, warm
    views_only = evaluate(ruleset, make(), route_shadow=route_shadow)
    assert summary(views_only) == expected
    return first


@pytest.mark.parametrize(
    ("ruleset", "step"), [(RULESET, 1), (RULESET_PL4, 3)], ids=["paranoia1", "paranoia4"]
)
def test_corpus_decisions_are_unchanged(ruleset: Ruleset, step: int) -> None:
    requests = [*attack_requests(), *benign_requests()]
    checked = blocked = 0
    for number, request in enumerate(requests):
        if number % step:
            continue
        if inspection(request) is None:
            continue
        verdict = assert_same(ruleset, lambda request=request: inspection(request))
        checked += 1
        blocked += verdict.blocked
    assert checked > 5000 // step
    assert blocked > checked // 2  # the corpus is mostly attacks: matches were compared


def test_varied_traffic_mix_is_unchanged() -> None:
    """The benchmark's mix (new paths, queries, cookies, JSON and form bodies every request)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    try:
        from benchmarks.waf_traffic import fresh_mix
    finally:
        sys.path.pop(0)
    for make in fresh_mix(300, seed=11):
        assert_same(RULESET, make)
        assert_same(RULESET_PL4, make, route_shadow=True)


# ---- random requests

PIECES = [
    "%",
    "%2",
    "%25",
    "%0a",
    "%0A",
    "%00",
    "%27",
    "%3C",
    "%u003c",
    "%c0%ae",
    "+",
    "&",
    "&lt",
    "&lt;",
    "&#60;",
    "&#x3c",
    "&amp;",
    "\\",
    "\\\\",
    "\\u0027",
    "\\x3c",
    "\\n",
    "\\047",
    "/*",
    "*/",
    "/*!50000",
    "--",
    "#",
    ";",
    "|",
    "$(",
    "${IFS}",
    "'",
    '"',
    "`",
    " ",
    "  ",
    "\t",
    "\u00a0",
    "\u3000",
    "\n",
    "\r",
    "\x00",
    "é",
    "ｓｃｒｉｐｔ",
    "../",
    "..\\",
    "/etc/passwd",
    "union",
    " select ",
    "or 1=1",
    "<script>",
    "onerror=",
    "javascript:",
    "${jndi:ldap://",
    "cat ",
    "curl",
    "sleep(5)",
    "{{7*7}}",
    "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",  # <script>alert(1)</script>
    "dW5pb24gc2VsZWN0IHBhc3N3b3Jk",  # union select password
    "Y2F0IC9ldGMvcGFzc3dk",  # cat /etc/passwd
    "eyJ1c2VyIjoiamFuZSJ9",
    "0x3c7363726970743e",
    "Basic ",
    "Mozilla/5.0",
    "text/html,*/*;q=0.8",
]
text = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(string.printable, max_size=6)), max_size=12
).map("".join)
header_value = text.map(lambda v: v.replace("\n", " ").replace("\r", " "))
NAMES = ["q", "id", "user", "cmd", "file", "url", "comment", "x", "select"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], bytes | None, str]:
    path = "/" + draw(text).replace("?", "").replace("#", "")
    args = draw(st.lists(st.tuples(st.sampled_from(NAMES), text), max_size=5))
    query = "&".join(f"{name}={value.replace('&', '%26')}" for name, value in args)
    headers = [
        ("Host", "shop.example.com"),
        ("User-Agent", draw(header_value)),
        ("Accept", draw(st.sampled_from(["*/*", "text/html,*/*;q=0.8", ""]))),
    ]
    for name in draw(st.lists(st.sampled_from(["Referer", "X-Data", "Cookie", "Range"]))):
        headers.append((name, draw(header_value)))
    kind = draw(st.sampled_from(["none", "json", "form", "text"]))
    body: bytes | None = None
    if kind == "json":
        document = {name: draw(text) for name in draw(st.lists(st.sampled_from(NAMES)))}
        body = json.dumps({"a": document, "b": [draw(text)]}).encode()
        headers.append(("Content-Type", "application/json"))
    elif kind == "form":
        body = draw(text).encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    elif kind == "text":
        body = draw(text).encode()
    method = "POST" if body is not None else draw(st.sampled_from(["GET", "HEAD", "DELETE"]))
    return method, path, headers, body, query


def _inspection(method: str, path: str, headers: list[tuple[str, str]], body, query: str):
    def make() -> Inspection:
        return Inspection(
            method=method,
            raw_target=f"{path}?{query}" if query else path,
            path=path,
            query=query,
            headers=list(headers),
            client_ip="203.0.113.9",
            body=body,
            body_size=len(body or b""),
        )

    return make


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
@example(("GET", "/a", [("User-Agent", "x\\"), ("X-Data", "u0041 PHNjcmlwdD4=")], None, ""))
@example(("GET", "/a", [("X-Data", "curl/8.5.0")], None, "q=%0acat%20/etc/passwd"))
def test_random_requests_decide_the_same(request: tuple[Any, ...]) -> None:
    make = _inspection(*request)
    assert_same(RULESET, make)
    assert_same(RULESET_PL4, make)


# ---- what the engine relies on


def _chains() -> list[tuple[str, ...]]:
    return sorted({view.chain for view in (*RULESET.views, *RULESET_PL4.views)})


line = st.lists(st.sampled_from([p for p in PIECES if "\n" not in p]), max_size=8).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(line, min_size=1, max_size=6), st.sampled_from(_chains()))
def test_per_value_results_are_the_lines_of_the_joined_result(
    values: list[str], chain: tuple[str, ...]
) -> None:
    """What `Evaluation._split` reads off the joined text: when the chain adds no line, line i
    of the joined result is the chain applied to value i."""
    joined = apply_chain("\n".join(values), chain)
    if joined.count("\n") == len(values) - 1:
        assert joined.split("\n") == [apply_chain(value, chain) for value in values]


def _remove_comments_by_line(value: str) -> str:
    """remove_comments as it was: every line rewritten."""
    if "/*" not in value:
        return value
    return "\n".join([transforms._remove_comments_line(part) for part in value.split("\n")])


@settings(max_examples=400, deadline=None)
@given(text)
def test_remove_comments_rewrites_only_lines_with_a_comment(value: str) -> None:
    assert TRANSFORMS["remove_comments"](value) == _remove_comments_by_line(value)
