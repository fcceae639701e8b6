"""Path normalization (raw sockets: the exact request-target bytes matter). The origin's
`raw_path` is what it received on the wire."""

from __future__ import annotations

import pytest

from harness import Stack


@pytest.mark.parametrize(
    ("sent", "origin_sees"),
    [
        ("/path-test/a/%2e%2e/b", "/path-test/b"),
        ("/path-test/a/%2E%2E/b", "/path-test/b"),
        ("/path-test/a/../b", "/path-test/b"),
        ("/path-test/a/./b/.", "/path-test/a/b/"),
        ("/path-test/a/%2e/b", "/path-test/a/b"),
        ("/../debug/echo/root", "/debug/echo/root"),  # no climbing above the root
        ("//debug//echo", "/debug/echo"),
        ("/debug///echo//x", "/debug/echo/x"),
        ("/debug/echo/%7Euser", "/debug/echo/~user"),
        ("/debug/echo/%41%62%2D%5f%2e", "/debug/echo/Ab-_."),
        ("/debug/echo/caf%c3%a9", "/debug/echo/caf%C3%A9"),  # escapes kept, hex upper-cased
        ("/debug/echo/a%20b", "/debug/echo/a%20b"),
        ("/debug/echo/a%09b", "/debug/echo/a%09b"),  # an encoded control char stays encoded
        ("/debug/echo/%3F%23", "/debug/echo/%3F%23"),  # reserved characters stay encoded
    ],
)
def test_path_normalized_before_forwarding(stack: Stack, sent: str, origin_sees: str) -> None:
    response = stack.raw_request("GET", sent + "?q=%7e%2F%2e")
    assert response.status == 200, response.text
    echo = response.json()
    assert echo["raw_path"] == origin_sees
    assert echo["query_string"] == "q=%7e%2F%2e"  # the query is never normalized


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        ("/debug/echo/a%2Fb", "encoded slash"),
        ("/debug/echo/a%2fb", "encoded slash"),
        ("/debug/echo/a%5Cb", "encoded slash"),
        ("/debug/echo/%2e%2e%2fetc", "encoded slash"),
        ("/debug/echo/a%zzb", "invalid percent encoding"),
        ("/debug/echo/a%2", "invalid percent encoding"),
        ("/debug/echo/a%", "invalid percent encoding"),
        ("/debug/echo/a%00b", "encoded nul"),
        ("/debug/echo/a\\b", "backslash"),
    ],
)
def test_hostile_paths_rejected_with_400(stack: Stack, sent: str, reason: str) -> None:
    stack.reset_hits()
    before = stack.metrics().value(
        "openflare_rejected_requests_total", stage="normalize", reason=reason.replace(" ", "_")
    )
    response = stack.raw_request("GET", sent)
    assert response.status == 400, response.text
    request_id = response.header("X-Request-ID")
    assert request_id
    assert response.text == f"400 Bad Request ({reason})\nrequest_id: {request_id}\n"
    assert stack.hits(sent) == 0
    after = stack.metrics().value(
        "openflare_rejected_requests_total", stage="normalize", reason=reason.replace(" ", "_")
    )
    assert after == before + 1


def test_rejected_path_never_reaches_origin_in_any_form(stack: Stack) -> None:
    stack.reset_hits()
    stack.raw_request("GET", "/debug/echo/x%2F..%2F..%2Fsecret")
    response = stack.raw_request("GET", "/debug/echo/probe")  # a marker request afterwards
    assert response.status == 200
    total = stack.hits("/debug/echo/x%2F..%2F..%2Fsecret") + stack.hits("/debug/secret")
    total += stack.hits("/secret") + stack.hits("/debug/echo/x/../../secret")
    assert total == 0
    assert stack.hits("/debug/echo/probe") == 1


@pytest.mark.parametrize(
    ("method", "target", "reason"),
    [
        ("GET", "http://evil.example/debug/echo/abs", "not origin form"),
        ("CONNECT", "evil.example:443", "not origin form"),
        ("GET", "/debug/echo/abs#frag", "fragment in target"),
        ("GET", "/debug/echo/abs?a=b#frag", "fragment in target"),
    ],
)
def test_non_origin_form_targets_rejected(
    stack: Stack, method: str, target: str, reason: str
) -> None:
    """The edge is not a forward proxy: absolute-form and CONNECT targets never make it
    fetch another authority, and a fragment (never sent by browsers) is refused."""
    stack.reset_hits()
    response = stack.raw_request(method, target)
    request_id = response.header("X-Request-ID")
    assert response.status == 400
    assert response.text == f"400 Bad Request ({reason})\nrequest_id: {request_id}\n"
    assert stack.hits("/debug/echo/abs") == 0


@pytest.mark.parametrize("target", ["/debug/echo/a b", "/debug/echo/a\x01b"])
def test_raw_whitespace_and_control_in_target_rejected(stack: Stack, target: str) -> None:
    stack.reset_hits()
    response = stack.raw_request("GET", target)
    assert response.status == 400
    assert stack.hits(target) == 0
    assert stack.hits("/debug/echo/a") == 0
