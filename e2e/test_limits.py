"""Size limits from configs/proxy.test.yaml: max_uri_bytes 4096 (414), max_header_count 64 and
max_header_bytes 16384 (431), max_request_body_bytes 2 MiB (413, declared or streamed)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import httpx
import pytest

from harness import (
    RawResponse,
    Stack,
    build_request,
    chunked,
    connect,
    read_response,
    send_until_answered,
)

MAX_URI = 4096
MAX_HEADER_COUNT = 64
MAX_HEADER_BYTES = 16384
MAX_BODY = 2 * 1024 * 1024


def _assert_edge_error(response: RawResponse, status: int, message: str) -> str:
    assert response.status == status, response.text
    request_id = response.header("X-Request-ID")
    assert request_id
    assert response.text == f"{status} {message}\nrequest_id: {request_id}\n"
    assert response.header("x-origin-seq") is None
    return request_id


def _rejected(stack: Stack, stage: str, reason: str) -> float:
    return stack.metrics().value("openflare_rejected_requests_total", stage=stage, reason=reason)


# ---- URI


def test_uri_at_limit_passes(stack: Stack) -> None:
    prefix = "/debug/echo?x="
    target = prefix + "a" * (MAX_URI - len(prefix))
    assert len(target) == MAX_URI
    response = stack.raw_request("GET", target)
    assert response.status == 200
    assert response.json()["query_string"] == target.partition("?")[2]


def test_uri_over_limit_is_414(stack: Stack) -> None:
    stack.reset_hits()
    before = _rejected(stack, "limits", "uri_too_long")
    target = "/debug/echo/long?x=" + "a" * MAX_URI
    response = stack.raw_request("GET", target)
    _assert_edge_error(response, 414, "URI Too Long")
    assert stack.hits("/debug/echo/long") == 0
    assert _rejected(stack, "limits", "uri_too_long") == before + 1


def test_uri_far_over_limit_refused_without_reaching_origin(stack: Stack) -> None:
    """Past aiohttp's parser limit the parser itself answers (still 414)."""
    stack.reset_hits()
    response = stack.raw_request("GET", "/debug/echo/huge?x=" + "a" * 20_000)
    assert response.status == 414
    assert stack.hits("/debug/echo/huge") == 0


# ---- headers


def test_header_count_at_limit_passes(stack: Stack) -> None:
    # Host + Connection (added by build_request) + 62 = 64 header lines
    headers = [(f"X-H{i}", "v") for i in range(MAX_HEADER_COUNT - 2)]
    response = stack.raw_request("GET", "/debug/echo", headers)
    assert response.status == 200
    seen = {name.lower() for name, _ in response.json()["headers"]}
    assert {f"x-h{i}" for i in range(MAX_HEADER_COUNT - 2)} <= seen


def test_too_many_headers_is_431(stack: Stack) -> None:
    stack.reset_hits()
    headers = [(f"X-H{i}", "v") for i in range(MAX_HEADER_COUNT - 1)]  # 65 with Host, Connection
    response = stack.raw_request("GET", "/debug/echo/many", headers)
    _assert_edge_error(response, 431, "Request Header Fields Too Large")
    assert stack.hits("/debug/echo/many") == 0


def test_too_many_headers_via_httpx_is_431(client: httpx.Client) -> None:
    headers = {f"X-Header-{i}": str(i) for i in range(70)}
    response = client.get("/debug/echo", headers=headers)
    assert response.status_code == 431
    assert response.text.endswith(f"request_id: {response.headers['x-request-id']}\n")


def test_one_huge_header_is_431(stack: Stack) -> None:
    stack.reset_hits()
    response = stack.raw_request("GET", "/debug/echo/bighdr", [("X-Big", "b" * 16_500)])
    _assert_edge_error(response, 431, "Request Header Fields Too Large")
    assert stack.hits("/debug/echo/bighdr") == 0


def test_header_far_over_limit_refused_without_reaching_origin(stack: Stack) -> None:
    stack.reset_hits()
    response = stack.raw_request("GET", "/debug/echo/hugehdr", [("X-Big", "b" * 100_000)])
    assert response.status == 431
    assert stack.hits("/debug/echo/hugehdr") == 0


def test_header_bytes_total_over_limit_is_431(stack: Stack) -> None:
    headers = [(f"X-Part-{i}", "p" * 2000) for i in range(9)]  # ~18 KB in 9 fields
    response = stack.raw_request("GET", "/debug/echo", headers)
    _assert_edge_error(response, 431, "Request Header Fields Too Large")


def test_headers_just_under_byte_limit_pass(stack: Stack) -> None:
    response = stack.raw_request("GET", "/debug/echo", [("X-Big", "b" * 15_000)])
    assert response.status == 200
    assert dict(response.json()["headers"])["x-big"] == "b" * 15_000


# ---- bodies


def test_declared_body_over_limit_is_413_without_reading_it(stack: Stack) -> None:
    stack.reset_hits()
    before = _rejected(stack, "limits", "body_too_large")
    head = build_request(
        "POST", "/upload", stack.host_header, [("Content-Length", str(MAX_BODY + 1))]
    )
    with connect(stack.proxy_host, stack.proxy_port) as sock:
        sock.sendall(head)  # the body is never sent: the answer must come anyway
        response = read_response(sock)
    _assert_edge_error(response, 413, "Content Too Large")
    assert stack.hits("/upload") == 0
    assert _rejected(stack, "limits", "body_too_large") == before + 1


def _body_chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    block = os.urandom(size // 2).hex().encode()  # ASCII: the WAF has nothing to say
    sent = 0
    while sent < total:
        part = block[: min(size, total - sent)]
        sent += len(part)
        yield part


def test_chunked_body_growing_past_limit_is_413(stack: Stack) -> None:
    before = _rejected(stack, "forward", "body_too_large")
    head = build_request("POST", "/upload", stack.host_header, [("Transfer-Encoding", "chunked")])
    with connect(stack.proxy_host, stack.proxy_port) as sock:
        response, sent = send_until_answered(sock, head, chunked(_body_chunks(4 * MAX_BODY)))
    _assert_edge_error(response, 413, "Content Too Large")
    assert sent < 4 * MAX_BODY  # answered while the client was still sending
    assert _rejected(stack, "forward", "body_too_large") == before + 1


def test_chunked_body_at_limit_passes_intact(client: httpx.Client) -> None:
    parts = list(_body_chunks(MAX_BODY, 100_000))
    expected = hashlib.sha256(b"".join(parts)).hexdigest()
    response = client.post("/upload", content=iter(parts))
    assert response.status_code == 200
    data = response.json()
    assert data["bytes"] == MAX_BODY
    assert data["sha256"] == expected
    assert data["content_length"] is None  # streamed on, not buffered and re-framed


@pytest.mark.parametrize("size", [MAX_BODY, MAX_BODY - 1])
def test_body_at_limit_with_content_length_passes_intact(client: httpx.Client, size: int) -> None:
    body = (os.urandom(size // 2 + 1).hex().encode())[:size]
    response = client.post("/upload", content=body)
    assert response.status_code == 200
    data = response.json()
    assert data["bytes"] == size
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    assert data["content_length"] == str(size)


def test_body_one_byte_over_limit_is_413(client: httpx.Client, stack: Stack) -> None:
    stack.reset_hits()
    response = client.post("/upload", content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert stack.hits("/upload") == 0


def test_connection_usable_after_limit_error(stack: Stack) -> None:
    """A 414 closes its connection; the next connection is served normally."""
    stack.raw_request("GET", "/debug/echo?x=" + "a" * MAX_URI)
    response = stack.raw_request("GET", "/debug/echo?after=1")
    assert response.status == 200
    assert response.json()["query_string"] == "after=1"
