"""The WAF engine: operators, targets, exclusions, scoring, allow-first, shadow, no masking."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openflare.waf.engine import Verdict, evaluate
from openflare.waf.rules import WafRules
from openflare.waf.targets import Inspection


def rules(*items: dict[str, Any], **file: Any) -> WafRules:
    return WafRules.model_validate({"rules": list(items), **file})


def rule(rule_id: str, condition: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": rule_id,
        "match": {"any": [condition]},
        "action": {"type": extra.pop("action", "block")},
    }
    body.update(extra)
    return body


def request(
    target: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    client_ip: str = "203.0.113.9",
    path: str | None = None,
) -> Inspection:
    raw_path, _, query = target.partition("?")
    all_headers = [("Host", "example.com"), *(headers or [])]
    return Inspection(
        method=method,
        raw_target=target,
        path=path if path is not None else raw_path,
        query=query,
        headers=all_headers,
        client_ip=client_ip,
        body=body,
        body_size=len(body or b""),
    )


def run(file: WafRules, inspection: Inspection, **kwargs: Any) -> Verdict:
    return evaluate(file.compiled, inspection, **kwargs)


# ------------------------------------------------------------------------------ operators


@pytest.mark.parametrize(
    ("condition", "value", "matches"),
    [
        ({"regex": "ab+c"}, "xxabbbcxx", True),
        ({"regex": "^abc$"}, "abc", True),
        ({"regex": "^abc$"}, "xabc", False),
        ({"regex": "(?i)SELECT"}, "select", True),
        ({"phrases": ["nikto", "sqlmap"]}, "Mozilla sqlmap/1.0", True),
        ({"phrases": ["nikto", "sqlmap"]}, "Mozilla", False),
        ({"phrases": ["a.b"]}, "axb", False),  # phrases are literal, not patterns
        ({"contains": "evil"}, "very evil text", True),
        ({"contains": "evil"}, "Evil", False),  # case-sensitive unless transformed
        ({"equals": "exact"}, "exact", True),
        ({"equals": "exact"}, "exactly", False),
        ({"prefix": "/admin"}, "/admin/users", True),
        ({"prefix": "/admin"}, "/x/admin", False),
        ({"suffix": ".php"}, "shell.php", True),
        ({"suffix": ".php"}, "shell.php.txt", False),
        ({"gt": 5}, "123456", True),  # numbers on string targets compare lengths
        ({"lt": 5}, "123456", False),
        ({"ge": 6}, "123456", True),
        ({"le": 6}, "123456", True),
        ({"eq": 6}, "123456", True),
    ],
)
def test_operator_table(condition: dict[str, Any], value: str, matches: bool) -> None:
    file = rules(rule("r", {"target": "arg:v", **condition}))
    verdict = run(file, request("/?v=" + value.replace(" ", "+")))
    assert verdict.blocked is matches


@pytest.mark.parametrize(
    ("cidr", "client_ip", "matches"),
    [
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.1.2.3", False),
        ("2001:db8::/32", "2001:db8::1", True),
        ("2001:db8::/32", "10.1.2.3", False),
        ("192.0.2.7", "192.0.2.7", True),
    ],
)
def test_cidr_operator_and_legacy_ip_cidr(cidr: str, client_ip: str, matches: bool) -> None:
    general = rules(rule("r", {"target": "client_ip", "cidr": [cidr]}))
    legacy = rules(rule("r", {"ip_cidr": cidr}))
    for file in (general, legacy):
        assert run(file, request(client_ip=client_ip)).blocked is matches


def test_negate_and_match_all() -> None:
    file = rules(
        {
            "id": "post-without-json",
            "match": {
                "all": [
                    {"target": "method", "equals": "POST"},
                    {"target": "content_type", "equals": "application/json", "negate": True},
                ]
            },
            "action": {"type": "block"},
        }
    )
    json_post = request(
        "/", method="POST", headers=[("Content-Type", "application/json")], body=b"{}"
    )
    form_post = request("/", method="POST", headers=[("Content-Type", "text/plain")], body=b"x")
    assert not run(file, json_post).blocked
    assert run(file, form_post).blocked
    assert not run(file, request("/")).blocked


# ------------------------------------------------------------------------------ targets

MULTIPART = (
    b'--B\r\nContent-Disposition: form-data; name="field"\r\n\r\nfield-value\r\n'
    b'--B\r\nContent-Disposition: form-data; name="up"; filename="../../x.php"\r\n'
    b"Content-Type: text/plain\r\n\r\nfile-content\r\n--B--\r\n"
)
XML = b'<order id="attr-value"><item>xml-text</item></order>'
JSON_BODY = json.dumps({"outer": {"inner": ["deep-value", {"$key": 1}]}}).encode()


@pytest.mark.parametrize(
    ("target", "needle", "inspection"),
    [
        ("path", "/normalized", request("/a/../normalized", path="/normalized")),
        ("raw_path", "/a/../normalized", request("/a/../normalized", path="/normalized")),
        ("uri", "q=1", request("/x?q=1")),
        ("query", "a=1&b=2", request("/x?a=1&b=2")),
        ("query_args", "v a l", request("/x?k=v+a+l")),
        ("query_names", "k[$ne]", request("/x?k%5B%24ne%5D=1")),
        (
            "args",
            "field-value",
            request(
                "/",
                method="POST",
                body=MULTIPART,
                headers=[("Content-Type", "multipart/form-data; boundary=B")],
            ),
        ),
        (
            "args_names",
            "field",
            request(
                "/",
                method="POST",
                body=b"field=1",
                headers=[("Content-Type", "application/x-www-form-urlencoded")],
            ),
        ),
        (
            "arg:inner",
            "deep-value",
            request(
                "/", method="POST", body=JSON_BODY, headers=[("Content-Type", "application/json")]
            ),
        ),
        (
            "json_keys",
            "$key",
            request(
                "/", method="POST", body=JSON_BODY, headers=[("Content-Type", "application/json")]
            ),
        ),
        (
            "json_values",
            "deep-value",
            request(
                "/", method="POST", body=JSON_BODY, headers=[("Content-Type", "application/json")]
            ),
        ),
        (
            "form_values",
            "b c",
            request(
                "/",
                method="POST",
                body=b"a=b+c",
                headers=[("Content-Type", "application/x-www-form-urlencoded")],
            ),
        ),
        (
            "multipart_values",
            "field-value",
            request(
                "/",
                method="POST",
                body=MULTIPART,
                headers=[("Content-Type", "multipart/form-data; boundary=B")],
            ),
        ),
        (
            "filenames",
            "../../x.php",
            request(
                "/",
                method="POST",
                body=MULTIPART,
                headers=[("Content-Type", "multipart/form-data; boundary=B")],
            ),
        ),
        (
            "files",
            "file-content",
            request(
                "/",
                method="POST",
                body=MULTIPART,
                headers=[("Content-Type", "multipart/form-data; boundary=B")],
            ),
        ),
        (
            "xml_values",
            "xml-text",
            request("/", method="POST", body=XML, headers=[("Content-Type", "application/xml")]),
        ),
        (
            "xml_values",
            "attr-value",
            request("/", method="POST", body=XML, headers=[("Content-Type", "application/xml")]),
        ),
        (
            "xml_names",
            "item",
            request("/", method="POST", body=XML, headers=[("Content-Type", "application/xml")]),
        ),
        (
            "graphql",
            "__schema",
            request(
                "/graphql",
                method="POST",
                body=b'{"query": "{ __schema { types { name } } }"}',
                headers=[("Content-Type", "application/json")],
            ),
        ),
        (
            "graphql",
            "mutation",
            request(
                "/graphql",
                method="POST",
                body=b"mutation { x }",
                headers=[("Content-Type", "application/graphql")],
            ),
        ),
        (
            "body",
            "raw body",
            request("/", method="POST", body=b"raw body", headers=[("Content-Type", "text/plain")]),
        ),
        ("headers", "header-value", request("/", headers=[("X-Thing", "header-value")])),
        ("header_names", "X-Thing", request("/", headers=[("X-Thing", "1")])),
        ("header:x-thing", "header-value", request("/", headers=[("X-Thing", "header-value")])),
        ("cookies", "cookie-value", request("/", headers=[("Cookie", "a=1; s=cookie-value")])),
        ("cookie_names", "sess", request("/", headers=[("Cookie", "sess=1")])),
        ("cookie:s", "cookie-value", request("/", headers=[("Cookie", "a=1; s=cookie-value")])),
        ("user_agent", "curl", request("/", headers=[("User-Agent", "curl/8")])),
        ("method", "DELETE", request("/", method="DELETE")),
        (
            "content_type",
            "application/json",
            request(
                "/",
                method="POST",
                body=b"{}",
                headers=[("Content-Type", "Application/JSON; charset=utf-8")],
            ),
        ),
        ("client_ip", "203.0.113.9", request("/")),
        (
            "flags",
            "xml_entity",
            request(
                "/",
                method="POST",
                body=b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
                headers=[("Content-Type", "text/xml")],
            ),
        ),
        ("flags", "get_with_body", request("/", body=b"x")),
        ("flags", "invalid_url_encoding", request("/?q=%zz")),
    ],
)
def test_target_table(target: str, needle: str, inspection: Inspection) -> None:
    file = rules(rule("r", {"target": target, "contains": needle}))
    verdict = run(file, inspection)
    assert verdict.blocked, (target, inspection.values(target) if ":" in target else target)


@pytest.mark.parametrize(
    ("target", "inspection", "expected"),
    [
        ("body_size", request("/", method="POST", body=b"12345"), 5),
        ("args_count", request("/?a=1&b=2&c=3"), 3),
        ("header_count", request("/", headers=[("A", "1"), ("B", "2")]), 3),
        ("cookie_count", request("/", headers=[("Cookie", "a=1; b=2")]), 2),
        ("uri_length", request("/abc"), 4),
    ],
)
def test_numeric_targets(target: str, inspection: Inspection, expected: int) -> None:
    assert run(rules(rule("r", {"target": target, "eq": expected})), inspection).blocked
    assert not run(rules(rule("r", {"target": target, "gt": expected})), inspection).blocked


@pytest.mark.parametrize(
    ("legacy", "inspection"),
    [
        ({"path_regex": "^/admin"}, request("/admin/x")),
        ({"query_regex": "debug=1"}, request("/?debug=1")),
        ({"body_regex": "secret"}, request("/", method="POST", body=b"a secret")),
        ({"header_regex": "X-Debug: ^on$"}, request("/", headers=[("X-Debug", "on")])),
        ({"header_name": "X-Debug"}, request("/", headers=[("x-debug", "1")])),
        ({"method": "TRACE"}, request("/", method="TRACE")),
        ({"user_agent_regex": "(?i)nikto"}, request("/", headers=[("User-Agent", "Nikto/2")])),
        (
            {"content_type": "text/xml"},
            request(
                "/", method="POST", body=b"<a/>", headers=[("Content-Type", "text/xml; charset=x")]
            ),
        ),
    ],
)
def test_original_one_key_conditions(legacy: dict[str, str], inspection: Inspection) -> None:
    assert run(rules(rule("r", legacy)), inspection).blocked


# ------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize(
    "query",
    [
        "q=%3Cscript%3E",
        "q=%253Cscript%253E",
        "q=PHNjcmlwdD4%3D",
        "q=%5Cu003cscript%5Cu003e",
        "q=%26lt%3Bscript%26gt%3B",
        "q=%EF%BC%9Cscript%EF%BC%9E",
        "q=%3CScRiPt%3E",
    ],
)
def test_encodings_through_the_standard_chain(query: str) -> None:
    file = rules(
        rule(
            "xss",
            {
                "target": ["args"],
                "transforms": [
                    "decode",
                    "base64_decode",
                    "decode",
                    "unicode_normalize",
                    "lowercase",
                ],
                "contains": "<script>",
            },
        )
    )
    assert run(file, request("/?" + query)).blocked


# ------------------------------------------------------------------------------ decisions


def test_all_rules_evaluated_log_never_hides_block() -> None:
    """Seed defect 6: the original stopped at the first match."""
    file = rules(
        rule("first-log", {"target": "args", "contains": "evil"}, action="log"),
        rule("second-block", {"target": "args", "contains": "evil"}),
    )
    verdict = run(file, request("/?q=evil"))
    assert verdict.blocked
    assert [(m.rule.id, m.action) for m in verdict.matches] == [
        ("first-log", "log"),
        ("second-block", "block"),
    ]


def test_allow_rules_are_checked_first_and_skip_detection() -> None:
    file = rules(
        rule("block-evil", {"target": "args", "contains": "evil"}),
        rule("allow-office", {"target": "client_ip", "cidr": ["10.0.0.0/8"]}, action="allow"),
    )
    office = run(file, request("/?q=evil", client_ip="10.9.9.9"))
    assert office.decision == "allow" and office.rule_ids == ["allow-office"]
    assert run(file, request("/?q=evil")).blocked


def test_anomaly_scores_add_up_to_the_threshold() -> None:
    file = rules(
        rule("weak-a", {"target": "args", "contains": "aaa"}, action="score", severity="warning"),
        rule("weak-b", {"target": "args", "contains": "bbb"}, action="score", severity="notice"),
        rule("strong", {"target": "args", "contains": "ccc"}, action="score", score=7),
        anomaly_threshold=5,
    )
    one = run(file, request("/?q=aaa"))
    assert not one.blocked and one.decision == "log" and one.score == 3
    assert [m.action for m in one.matches] == ["log"]
    both = run(file, request("/?q=aaa+bbb"))
    assert both.blocked and both.score == 5
    assert {m.action for m in both.matches} == {"block"}
    assert run(file, request("/?q=ccc")).blocked


def test_status_code_comes_from_the_blocking_rule() -> None:
    file = rules(rule("teapot", {"target": "args", "contains": "tea"}, action="block"))
    file = WafRules.model_validate(
        {
            "rules": [
                {
                    "id": "teapot",
                    "match": {"any": [{"target": "args", "contains": "tea"}]},
                    "action": {"type": "block", "status_code": 418},
                }
            ]
        }
    )
    assert run(file, request("/?q=tea")).status == 418


def test_bypass_cache_and_log_do_not_block() -> None:
    file = rules(
        rule("nocache", {"target": "path", "prefix": "/live"}, action="bypass_cache"),
        rule("note", {"target": "path", "prefix": "/live"}, action="log"),
    )
    verdict = run(file, request("/live/feed"))
    assert not verdict.blocked and verdict.bypass_cache
    assert [m.action for m in verdict.matches] == ["bypass_cache", "log"]


@pytest.mark.parametrize("where", ["file", "rule", "route"])
def test_shadow_mode_never_blocks_and_counts_would_block(where: str) -> None:
    item = rule("r", {"target": "args", "contains": "evil"})
    file_options: dict[str, Any] = {}
    if where == "rule":
        item["mode"] = "shadow"
    if where == "file":
        file_options["mode"] = "shadow"
    file = rules(item, **file_options)
    verdict = run(file, request("/?q=evil"), route_shadow=where == "route")
    assert verdict.decision == "would_block" and not verdict.blocked
    assert [m.action for m in verdict.matches] == ["would_block"]


def test_a_shadow_rule_does_not_count_towards_an_enforced_block() -> None:
    file = rules(
        rule("new", {"target": "args", "contains": "x"}, action="score", score=3, mode="shadow"),
        rule("old", {"target": "args", "contains": "x"}, action="score", score=3),
    )
    verdict = run(file, request("/?q=x"))
    assert verdict.decision == "would_block"
    assert {m.rule.id: m.action for m in verdict.matches} == {"new": "would_block", "old": "log"}


def test_enforced_block_with_shadow_rule_reports_both() -> None:
    file = rules(
        rule("enforced", {"target": "args", "contains": "x"}),
        rule("trial", {"target": "args", "contains": "x"}, mode="shadow"),
    )
    verdict = run(file, request("/?q=x"))
    assert verdict.blocked
    assert {m.rule.id: m.action for m in verdict.matches} == {
        "enforced": "block",
        "trial": "would_block",
    }


# ------------------------------------------------------------------------------ exclusions


def test_rule_exclusions_by_argument_header_cookie_and_path() -> None:
    file = rules(
        rule(
            "r",
            {"target": ["args", "headers", "cookies"], "contains": "evil"},
            exclude={
                "args": ["body_html"],
                "headers": ["X-Rich"],
                "cookies": ["draft"],
                "paths": ["/editor/"],
            },
        )
    )
    assert not run(file, request("/?body_html=evil")).blocked
    assert run(file, request("/?other=evil")).blocked
    assert not run(file, request("/", headers=[("x-rich", "evil")])).blocked
    assert run(file, request("/", headers=[("X-Plain", "evil")])).blocked
    assert not run(file, request("/", headers=[("Cookie", "draft=evil")])).blocked
    assert run(file, request("/", headers=[("Cookie", "other=evil")])).blocked
    assert not run(file, request("/editor/save?other=evil")).blocked


def test_file_exclusions_by_tag_and_rule_scoped_to_paths() -> None:
    file = rules(
        rule("xss-a", {"target": "args", "contains": "<x"}, tags=["xss"]),
        rule("sqli-a", {"target": "args", "contains": "' or"}, tags=["sqli"]),
        exclusions=[
            {"tags": ["xss"], "paths": ["/cms/"], "args": ["content"]},
            {"rules": ["sqli-a"], "paths": ["/search"]},
        ],
    )
    assert not run(file, request("/cms/page?content=<x")).blocked
    assert run(file, request("/cms/page?title=<x")).blocked
    assert run(file, request("/blog?content=<x")).blocked
    assert not run(file, request("/search?q=' or")).blocked
    assert run(file, request("/other?q=' or")).blocked


def test_paranoia_level_selects_rules() -> None:
    items = [
        rule("pl1", {"target": "args", "contains": "a"}),
        rule("pl3", {"target": "args", "contains": "b"}, paranoia=3),
    ]
    assert not run(rules(*items), request("/?q=b")).blocked
    assert run(rules(*items, paranoia=3), request("/?q=b")).blocked
    assert rules(*items).compiled.loaded_rules == 1


def test_disabled_rules_are_not_loaded() -> None:
    file = rules(rule("off", {"target": "args", "contains": "a"}, enabled=False))
    assert file.compiled.empty and run(file, request("/?q=a")).decision == "pass"


def test_patterns_of_one_view_share_one_set() -> None:
    """Rules on the same targets and transforms are matched in one RE2 set pass; identical
    patterns are added once."""
    file = rules(
        rule("a", {"target": ["args", "cookies"], "regex": "aa+"}),
        rule("b", {"target": ["cookies", "args"], "regex": "bb+"}),
        rule("c", {"target": ["args", "cookies"], "regex": "aa+"}),
        rule("d", {"target": ["args"], "transforms": ["lowercase"], "regex": "dd"}),
    )
    views = file.compiled.views
    assert len(views) == 2
    assert views[0].patterns == ["(?m)aa+", "(?m)bb+"]
    assert views[0].pattern_rules[0] == {0, 2}


def test_audit_excerpt_is_short_and_escaped() -> None:
    file = rules(rule("r", {"target": "args", "contains": "evil"}), excerpt_chars=16)
    verdict = run(file, request("/?q=" + "x" * 100 + "%0Aevil%00" + "y" * 100))
    excerpt = verdict.matches[0].excerpt
    assert "evil" in excerpt and "\\n" in excerpt and "\n" not in excerpt
    assert len(excerpt) <= 32
    assert verdict.matches[0].target == "arg:q"
