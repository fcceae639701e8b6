"""Request identity, forwarding headers and hop-by-hop stripping in both directions."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from harness import UUID4_RE, ProxyProcess, RawResponse, Stack, build_request, raw_exchange


def _origin_headers(echo: dict) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in echo["headers"]]


def _values(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in pairs if key == name.lower()]


# ---- X-Request-ID


def test_request_id_generated_echoed_and_forwarded(client: httpx.Client) -> None:
    ids = set()
    for _ in range(3):
        response = client.get("/debug/echo")
        request_id = response.headers["x-request-id"]
        assert UUID4_RE.match(request_id), request_id
        assert _values(_origin_headers(response.json()), "x-request-id") == [request_id]
        ids.add(request_id)
    assert len(ids) == 3


@pytest.mark.parametrize(
    "offered",
    ["abc", "trace-123.ABC_xyz", "A" * 64, "0", "a.b-c_d"],
)
def test_safe_client_request_id_kept(client: httpx.Client, offered: str) -> None:
    response = client.get("/debug/echo", headers={"X-Request-ID": offered})
    assert response.headers["x-request-id"] == offered
    assert _values(_origin_headers(response.json()), "x-request-id") == [offered]


@pytest.mark.parametrize(
    "offered",
    ["A" * 65, "has space", "semi;colon", "slash/es", 'quote"d', "a<b", "a,b", "a:b", "a@b"],
)
def test_unsafe_client_request_id_replaced(stack: Stack, offered: str) -> None:
    response = stack.raw_request("GET", "/debug/echo", [("X-Request-ID", offered)])
    assert response.status == 200
    request_id = response.header("X-Request-ID") or ""
    assert request_id != offered
    assert UUID4_RE.match(request_id), request_id
    assert _values(_origin_headers(response.json()), "x-request-id") == [request_id]


def test_utf8_header_value_forwarded_byte_exact(stack: Stack) -> None:
    value = "caf\xc3\xa9 \xe2\x82\xac"  # UTF-8 bytes of "café €", sent as they are
    response = stack.raw_request("GET", "/debug/echo", [("X-Note", value)])
    assert response.status == 200, response.text
    seen = _origin_headers(response.json())  # the origin decodes header bytes as latin-1
    assert _values(seen, "x-note") == [value]


def test_non_utf8_header_bytes_refused_not_crashing(stack: Stack) -> None:
    """A field value that is not UTF-8 (here a lone latin-1 0xE9) is refused with a 400 that
    carries the request id; it never reaches the inspection stages as a 500."""
    stack.reset_hits()
    response = stack.raw_request("GET", "/debug/echo/latin1", [("X-Note", "caf\xe9")])
    request_id = response.header("X-Request-ID")
    assert response.status == 400, response.text
    assert request_id and UUID4_RE.match(request_id)
    assert response.text.endswith(f"request_id: {request_id}\n")
    assert stack.hits("/debug/echo/latin1") == 0


def test_empty_request_id_replaced(stack: Stack) -> None:
    response = stack.raw_request("GET", "/debug/echo", [("X-Request-ID", "")])
    request_id = response.header("X-Request-ID") or ""
    assert UUID4_RE.match(request_id), request_id
    assert _values(_origin_headers(response.json()), "x-request-id") == [request_id]


def test_origin_cannot_override_request_id(client: httpx.Client) -> None:
    response = client.get(
        "/headers/set", params={"X-Request-ID": "from-origin"}, headers={"X-Request-ID": "mine-1"}
    )
    assert response.status_code == 200
    assert response.headers.get_list("x-request-id") == ["mine-1"]


# ---- forwarding headers


def test_forwarding_headers_rebuilt(client: httpx.Client) -> None:
    response = client.get("/debug/echo")
    seen = _origin_headers(response.json())
    sent_host = response.request.headers["host"]
    assert _values(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert _values(seen, "x-forwarded-proto") == ["http"]
    assert _values(seen, "x-forwarded-host") == [sent_host]
    assert _values(seen, "host") == [sent_host]
    assert _values(seen, "via") == ["1.1 openflare"]
    assert response.json()["client"].startswith("127.0.0.1:")


def test_spoofed_forwarding_headers_from_untrusted_client_discarded(stack: Stack) -> None:
    response = stack.raw_request(
        "GET",
        "/debug/echo",
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8, 10.255.0.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
        ],
    )
    assert response.status == 200
    seen = _origin_headers(response.json())
    assert _values(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert _values(seen, "x-forwarded-proto") == ["http"]
    assert _values(seen, "x-forwarded-host") == [stack.host_header]


@pytest.mark.local_only
def test_spoofed_forwarded_for_not_used_as_client_ip_in_log(local_stack: Stack) -> None:
    assert local_stack.proxy is not None
    response = local_stack.raw_request(
        "GET", "/debug/echo", [("X-Forwarded-For", "1.2.3.4"), ("X-Request-ID", "xff-log-1")]
    )
    assert response.status == 200
    assert local_stack.proxy.access_log("xff-log-1")["client_ip"] == "127.0.0.1"


@pytest.mark.local_only
def test_forwarding_headers_extended_from_trusted_proxy(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    """Behind a trusted proxy (here: every loopback peer) the chain is kept and extended and
    the client IP is the first untrusted hop from the right."""
    proxy = proxy_factory({"security": {"trusted_proxies": ["127.0.0.0/8"]}})
    response = httpx.get(
        proxy.url + "/debug/echo",
        headers={
            "Host": "127.0.0.1",
            "X-Forwarded-For": "203.0.113.7, 127.0.0.5",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "www.example.test",
            "X-Request-ID": "trusted-xff-1",
        },
    )
    assert response.status_code == 200
    seen = _origin_headers(response.json())
    assert _values(seen, "x-forwarded-for") == ["203.0.113.7, 127.0.0.5, 127.0.0.1"]
    assert _values(seen, "x-forwarded-proto") == ["https"]
    assert _values(seen, "x-forwarded-host") == ["www.example.test"]
    assert proxy.access_log("trusted-xff-1")["client_ip"] == "203.0.113.7"


def test_existing_via_extended(client: httpx.Client) -> None:
    response = client.get("/debug/echo", headers={"Via": "1.0 fred, 1.1 p.example.net"})
    seen = _origin_headers(response.json())
    assert _values(seen, "via") == ["1.0 fred, 1.1 p.example.net, 1.1 openflare"]


def test_end_to_end_headers_kept_in_order_with_duplicates(stack: Stack) -> None:
    response = stack.raw_request(
        "GET",
        "/debug/echo",
        [
            ("X-Multi", "one"),
            ("Accept", "text/plain"),
            ("X-Multi", "two"),
            ("Authorization", "Bearer abc"),
            ("Cookie", "a=1; b=2"),
            ("User-Agent", "e2e/1"),
        ],
    )
    seen = _origin_headers(response.json())
    assert _values(seen, "x-multi") == ["one", "two"]
    assert _values(seen, "accept") == ["text/plain"]
    assert _values(seen, "authorization") == ["Bearer abc"]
    assert _values(seen, "cookie") == ["a=1; b=2"]
    assert _values(seen, "user-agent") == ["e2e/1"]
    names = [name for name, _ in seen]
    assert names.index("x-multi") < names.index("accept") < names.index("authorization")


def test_proxy_adds_no_client_headers_of_its_own(stack: Stack) -> None:
    """The upstream client must not invent User-Agent, Accept or Accept-Encoding."""
    response = stack.raw_request("GET", "/debug/echo")
    names = {name for name, _ in _origin_headers(response.json())}
    assert names == {
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "x-request-id",
    }


# ---- hop-by-hop, request direction


def test_hop_by_hop_request_headers_not_forwarded(stack: Stack) -> None:
    response = stack.raw_request(
        "GET",
        "/debug/echo",
        [
            ("Connection", "keep-alive, X-Secret"),
            ("Connection", "X-Other"),
            ("X-Secret", "1"),
            ("X-Other", "2"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
            ("Proxy-Connection", "keep-alive"),
            ("X-Keep", "yes"),
        ],
    )
    assert response.status == 200
    seen = _origin_headers(response.json())
    names = {name for name, _ in seen}
    for dropped in (
        "x-secret",
        "x-other",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ):
        assert dropped not in names, f"{dropped} reached the origin: {seen}"
    assert all("x-secret" not in value.lower() for value in _values(seen, "connection"))
    assert _values(seen, "x-keep") == ["yes"]


# ---- hop-by-hop, response direction


HOP_RESPONSE_QUERY = (
    "/headers/set?Connection=X-Foo&X-Foo=bar&Keep-Alive=timeout%3D5&Proxy-Connection=keep-alive"
    "&Trailer=X-Sum&Upgrade=h2c&X-Normal=yes"
)


def _check_origin_emits(stack: Stack) -> RawResponse:
    """Sanity: the origin really sends these headers (else the proxy test proves nothing)."""
    origin = stack.origin_url.removeprefix("http://")
    host, _, port = origin.partition(":")
    return raw_exchange(host, int(port), build_request("GET", HOP_RESPONSE_QUERY, origin))


def test_hop_by_hop_response_headers_not_returned(stack: Stack) -> None:
    direct = _check_origin_emits(stack)
    assert direct.header("X-Foo") == "bar"
    assert direct.header("Keep-Alive") == "timeout=5"
    assert any("x-foo" in v.lower() for v in direct.header_all("Connection")), direct.headers

    response = stack.raw_request("GET", HOP_RESPONSE_QUERY)
    assert response.status == 200
    names = {name.lower() for name, _ in response.headers}
    for dropped in ("x-foo", "keep-alive", "proxy-connection", "trailer", "upgrade"):
        assert dropped not in names, f"{dropped} reached the client: {response.headers}"
    assert all("x-foo" not in v.lower() for v in response.header_all("Connection"))
    assert response.header("X-Normal") == "yes"
    assert response.complete
