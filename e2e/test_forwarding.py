"""What the origin receives: method, path, raw query and body bytes, exactly as sent."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from harness import Stack

# every printable byte and CR/LF: bytes that mean something to HTTP framing, nothing to a WAF
TEXT_BYTES = bytes(range(32, 127)) * 16 + b"\r\n\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", b""),
        ("POST", b'{"k": "v"}'),
        ("PUT", TEXT_BYTES),
        ("PATCH", b"patch=1"),
        ("DELETE", b""),
        ("OPTIONS", b""),
        ("PURGE", b""),
        ("PROPFIND", b"<propfind/>"),
    ],
)
def test_method_and_body_reach_origin(client: httpx.Client, method: str, body: bytes) -> None:
    response = client.request(method, "/debug/echo/m", content=body)
    assert response.status_code == 200
    echo = response.json()
    assert echo["method"] == method
    assert echo["raw_path"] == "/debug/echo/m"
    assert echo["body_bytes"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_arbitrary_token_method_forwarded(client: httpx.Client) -> None:
    """RFC 9110 §9.1: a method is any token; a proxy forwards methods it does not know (the
    origin here answers every method on /debug/echo)."""
    response = client.request("FOO-BAR", "/debug/echo/m", content=b"ext")
    assert response.status_code == 200, response.text
    assert response.json()["method"] == "FOO-BAR"
    assert response.json()["body_text"] == "ext"


@pytest.mark.parametrize(
    "query",
    [
        "b=2&a=1&a=0&x=%20y",
        "p=%2F&q=a%2fb&r=%2E&s=%5c",  # escapes in the query are not path escapes: untouched
        "empty=&flag&=v&&",
        "a=1;b=2&c=%7e&d=~",
        "q=%E2%82%AC&z=%e2%82%ac",
        "x=" + "y" * 1000,
    ],
)
def test_raw_query_forwarded_exactly(stack: Stack, query: str) -> None:
    response = stack.raw_request("GET", "/debug/echo?" + query)
    assert response.status == 200
    echo = response.json()
    assert echo["query_string"] == query
    assert echo["raw_path"] == "/debug/echo"


def test_empty_query_marker_not_invented(stack: Stack) -> None:
    response = stack.raw_request("GET", "/debug/echo")
    assert response.json()["query_string"] == ""


def test_path_forwarded_unchanged_when_canonical(stack: Stack) -> None:
    path = "/path-test/a-b_c.d~e/%C3%A9/%20x/"
    response = stack.raw_request("GET", path + "?k=v")
    assert response.status == 200
    echo = response.json()
    assert echo["raw_path"] == path
    assert echo["query_string"] == "k=v"


def test_request_body_framing_preserved_for_content_length(client: httpx.Client) -> None:
    body = b"a" * 70_000  # larger than the WAF inspection window (64 KiB): must not be cut
    response = client.post("/upload", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    data = response.json()
    assert data["bytes"] == len(body)
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    assert data["content_length"] == str(len(body))
    assert data["content_type"] == "text/plain"


def test_head_keeps_content_length_and_sends_no_body(stack: Stack) -> None:
    response = stack.raw_request("HEAD", "/large?size=1000")
    assert response.status == 200
    assert response.header("Content-Length") == "1000"
    assert response.body == b""


def test_origin_status_and_headers_pass_through(client: httpx.Client) -> None:
    response = client.get("/error/418")
    assert response.status_code == 418
    assert response.json()["status"] == 418
    assert response.headers["content-type"] == "application/json"
    assert response.headers["server"] == "uvicorn"  # the origin's own header is kept


def test_no_content_response(client: httpx.Client) -> None:
    response = client.get("/error/204")
    assert response.status_code == 204
    assert response.content == b""
