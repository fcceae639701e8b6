"""Bodies stream through byte-identical in both directions."""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

from harness import Stack

MIB = 1024 * 1024
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"  # testsite's


def pattern(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def random_text(size: int) -> bytes:
    """Random, incompressible, and plain ASCII (hex): nothing a WAF rule could match."""
    return os.urandom((size + 1) // 2).hex().encode()[:size]


def test_upload_1mib_byte_identical(client: httpx.Client) -> None:
    body = random_text(MIB)
    response = client.post(
        "/upload", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200
    data = response.json()
    assert data["bytes"] == MIB
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    assert data["content_type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("content_type", "head"),
    [
        ("application/octet-stream", b""),
        ("image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        ("application/zip", b"PK\x03\x04\x14\x00\x00\x00\x08\x00"),
    ],
)
def test_binary_upload_1mib_byte_identical(
    client: httpx.Client, content_type: str, head: bytes
) -> None:
    """Binary files (every byte value, NUL included) are ordinary uploads, not attacks."""
    body = head + os.urandom(MIB - len(head))
    response = client.post("/upload", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["bytes"] == MIB
    assert data["sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_upload_byte_identical(client: httpx.Client) -> None:
    parts = [random_text(n) for n in (1, 100, 65536, 7, 300_000, 3)]
    response = client.post("/upload", content=iter(parts))
    assert response.status_code == 200
    data = response.json()
    body = b"".join(parts)
    assert data["bytes"] == len(body)
    assert data["sha256"] == hashlib.sha256(body).hexdigest()


def test_download_1mib_byte_identical(client: httpx.Client) -> None:
    response = client.get("/large", params={"size": MIB})
    assert response.status_code == 200
    assert response.headers["content-length"] == str(MIB)
    assert len(response.content) == MIB
    digest = hashlib.sha256(response.content).hexdigest()
    assert digest == response.headers["x-body-sha256"]
    assert response.content == pattern(MIB)


def test_download_8mib_streamed(client: httpx.Client) -> None:
    size = 8 * MIB + 13
    digest = hashlib.sha256()
    received = 0
    with client.stream("GET", "/large", params={"size": size}) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == response.headers["x-body-sha256"]


def test_chunked_response_arrives_complete(stack: Stack) -> None:
    response = stack.raw_request("GET", "/stream/chunked?chunks=20&size=4096&delay_ms=5")
    assert response.status == 200
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.header("Content-Length") is None
    assert response.complete
    assert len(response.body) == 20 * 4096
    assert hashlib.sha256(response.body).hexdigest() == response.header("x-body-sha256")
    assert response.body == pattern(20 * 4096)


def test_chunked_response_is_streamed_not_buffered(client: httpx.Client) -> None:
    """The first chunk reaches the client long before the origin has sent the last one."""
    started = time.monotonic()
    with client.stream(
        "GET", "/stream/chunked", params={"chunks": 4, "size": 16, "delay_ms": 500}
    ) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunks)
        first_at = time.monotonic() - started
        rest = b"".join(chunks)
        total_at = time.monotonic() - started
    assert first == pattern(16)[: len(first)]
    assert total_at >= 1.5  # 3 delays of 0.5 s
    assert total_at - first_at >= 1.2  # the first chunk did not wait for the last
    assert first + rest == pattern(64)


def test_empty_chunked_response(stack: Stack) -> None:
    response = stack.raw_request("GET", "/stream/chunked?chunks=0")
    assert response.status == 200
    assert response.complete
    assert response.body == b""
