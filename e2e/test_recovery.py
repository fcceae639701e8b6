"""A crash inside the pipeline becomes a 500 with the request id; the process goes on."""

from __future__ import annotations

import httpx
import pytest

from harness import UUID4_RE, Stack


def test_injected_fault_is_500_and_next_request_works(stack: Stack, client: httpx.Client) -> None:
    stack.reset_hits()
    before = stack.metrics()
    response = client.get("/__openflare/fault/raise")
    request_id = response.headers["x-request-id"]
    assert response.status_code == 500
    assert UUID4_RE.match(request_id)
    assert response.text == f"500 Internal Server Error\nrequest_id: {request_id}\n"
    assert response.headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text and "InjectedFault" not in response.text
    after = stack.metrics()
    assert after.value("openflare_panics_total") == before.value("openflare_panics_total") + 1
    assert (
        after.value("openflare_requests_total", route="local", status_class="5xx")
        == before.value("openflare_requests_total", route="local", status_class="5xx") + 1
    )
    assert stack.hits("/__openflare/fault/raise") == 0

    following = client.get("/debug/echo", params={"after": "fault"})
    assert following.status_code == 200
    assert following.json()["query_string"] == "after=fault"


def test_injected_fault_on_post_is_500(stack: Stack, client: httpx.Client) -> None:
    """The same crash on a request the cache stage passes straight on (not GET/HEAD)."""
    before = stack.metrics().value("openflare_panics_total")
    response = client.post("/__openflare/fault/raise", content=b"x")
    request_id = response.headers["x-request-id"]
    assert response.status_code == 500
    assert response.text == f"500 Internal Server Error\nrequest_id: {request_id}\n"
    assert stack.metrics().value("openflare_panics_total") == before + 1
    assert client.get("/debug/echo").status_code == 200


def test_fault_on_a_reused_connection_leaves_it_usable(client: httpx.Client) -> None:
    for i in range(3):
        assert client.post("/__openflare/fault/raise").status_code == 500
        response = client.get("/debug/echo", params={"i": i})
        assert response.status_code == 200
        assert response.json()["query_string"] == f"i={i}"


def test_other_fault_paths_are_forwarded(stack: Stack, client: httpx.Client) -> None:
    """Only /__openflare/fault/raise raises; a sibling path is an ordinary request."""
    response = client.get("/__openflare/fault/other")
    assert response.status_code == 404
    assert response.headers["x-origin-seq"].isdigit()  # answered by the origin


@pytest.mark.local_only
def test_panic_logged_with_traceback_and_request_id(local_stack: Stack) -> None:
    assert local_stack.proxy is not None
    with local_stack.client() as c:
        response = c.post("/__openflare/fault/raise", headers={"X-Request-ID": "panic-log-1"})
    assert response.status_code == 500
    panic = local_stack.proxy.wait_log(event="panic", request_id="panic-log-1")
    assert panic["level"] == "error"
    assert panic["path"] == "/__openflare/fault/raise"
    assert "InjectedFault" in panic["traceback"]
    access = local_stack.proxy.access_log("panic-log-1")
    assert access["status"] == 500
    assert access["error"] == "panic: InjectedFault"
