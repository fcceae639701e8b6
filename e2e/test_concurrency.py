"""Many requests at once: every one answered, with its own body and its own request id."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx

from harness import Metrics, Stack


async def test_200_concurrent_requests(stack: Stack) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=stack.proxy_url, headers={"Host": stack.host_header}, limits=limits, timeout=30
    ) as client:

        async def one(i: int) -> tuple[int, httpx.Response]:
            if i % 4 == 0:
                body = f"body-{i}".encode() * 100
                return i, await client.post(f"/debug/echo/c{i}?i={i}", content=body)
            return i, await client.get(f"/debug/echo/c{i}?i={i}")

        results = await asyncio.gather(*(one(i) for i in range(200)))

    request_ids = set()
    for i, response in results:
        assert response.status_code == 200, (i, response.text)
        echo = response.json()
        assert echo["raw_path"] == f"/debug/echo/c{i}"
        assert echo["query_string"] == f"i={i}"
        if i % 4 == 0:
            body = f"body-{i}".encode() * 100
            assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
        request_id = response.headers["x-request-id"]
        assert dict(echo["headers"])["x-request-id"] == request_id
        request_ids.add(request_id)
    assert len(request_ids) == 200


async def test_slow_requests_are_handled_concurrently(stack: Stack) -> None:
    """50 requests that each take 0.5 s at the origin finish together, not one by one."""
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(
        base_url=stack.proxy_url, headers={"Host": stack.host_header}, limits=limits, timeout=30
    ) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(client.get("/slow", params={"delay_ms": 500, "n": i}) for i in range(50))
        )
        elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 50
    assert all(r.json()["completed"] is True for r in responses)
    assert elapsed < 8.0  # serially this would take 25 s


async def _in_flight(admin: httpx.AsyncClient, url: str) -> float:
    return Metrics.parse((await admin.get(url)).text).value("openflare_in_flight_requests")


async def _wait_in_flight(
    admin: httpx.AsyncClient, url: str, wanted: float, within: float
) -> float:
    deadline = time.monotonic() + within
    value = await _in_flight(admin, url)
    while value != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        value = await _in_flight(admin, url)
    return value


async def test_in_flight_gauge_tracks_concurrent_requests(stack: Stack) -> None:
    url = stack.admin_url + "/metrics"
    async with (
        httpx.AsyncClient(
            base_url=stack.proxy_url, headers={"Host": stack.host_header}, timeout=30
        ) as client,
        httpx.AsyncClient(timeout=5) as admin,
    ):
        assert await _wait_in_flight(admin, url, 0, 3.0) == 0
        tasks = [
            # headers at once, body after 3 s: in flight that long, no header timeout
            asyncio.ensure_future(client.get("/slow-body", params={"delay_ms": 3000, "g": i}))
            for i in range(5)
        ]
        assert await _wait_in_flight(admin, url, 5, 2.5) == 5
        responses = await asyncio.gather(*tasks)
        assert await _wait_in_flight(admin, url, 0, 2.0) == 0
    assert [r.status_code for r in responses] == [200] * 5
