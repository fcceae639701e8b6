from multidict import CIMultiDict, CIMultiDictProxy

from openflare.upstream.headers import client_response_headers, upstream_request_headers


def proxy(pairs: list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def forwarded(pairs: list[tuple[str, str]], *, trusted: bool = False, pass_host: bool = True):
    return upstream_request_headers(
        proxy(pairs),
        request_id="rid-1",
        peer_ip="10.0.0.5",
        peer_trusted=trusted,
        scheme="http",
        pass_host=pass_host,
    )


def test_hop_by_hop_and_connection_named_headers_are_removed() -> None:
    out = dict(
        forwarded(
            [
                ("Host", "example.com"),
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Upgrade", "websocket"),
                ("Proxy-Authorization", "Basic x"),
                ("Transfer-Encoding", "chunked"),
                ("Expect", "100-continue"),
                ("X-Keep", "yes"),
            ]
        )
    )
    for gone in (
        "Connection",
        "X-Secret",
        "Keep-Alive",
        "TE",
        "Upgrade",
        "Proxy-Authorization",
        "Transfer-Encoding",
        "Expect",
    ):
        assert gone not in out
    assert out["X-Keep"] == "yes"
    assert out["Host"] == "example.com"


def test_untrusted_peer_forwarding_headers_are_replaced() -> None:
    out = forwarded(
        [
            ("Host", "example.com"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.test"),
            ("X-Request-ID", "client-chosen"),
        ]
    )
    d = dict(out)
    assert d["X-Forwarded-For"] == "10.0.0.5"
    assert d["X-Forwarded-Proto"] == "http"
    assert d["X-Forwarded-Host"] == "example.com"
    assert d["X-Request-ID"] == "rid-1"
    assert d["Via"] == "1.1 openflare"
    assert [k for k, _ in out].count("X-Forwarded-For") == 1


def test_trusted_peer_forwarding_headers_are_extended() -> None:
    d = dict(
        forwarded(
            [
                ("Host", "example.com"),
                ("X-Forwarded-For", "1.1.1.1"),
                ("X-Forwarded-Proto", "https"),
                ("Via", "1.0 lb"),
            ],
            trusted=True,
        )
    )
    assert d["X-Forwarded-For"] == "1.1.1.1, 10.0.0.5"
    assert d["X-Forwarded-Proto"] == "https"
    assert d["Via"] == "1.0 lb, 1.1 openflare"


def test_host_dropped_when_not_passed() -> None:
    assert "Host" not in dict(forwarded([("Host", "example.com")], pass_host=False))


def test_duplicates_and_order_are_kept() -> None:
    out = forwarded([("Host", "h"), ("Cookie", "a=1"), ("X-A", "1"), ("Cookie", "b=2")])
    assert [v for k, v in out if k == "Cookie"] == ["a=1", "b=2"]


def test_response_headers_strip_hop_by_hop() -> None:
    out = client_response_headers(
        proxy(
            [
                ("Connection", "X-Foo"),
                ("X-Foo", "bar"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "10"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Cache-Control", "max-age=5"),
            ]
        )
    )
    assert list(out) == [
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Cache-Control", "max-age=5"),
    ]
