"""Header rewriting between client and origin.

Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones Go's and Caddy's proxies strip, plus
every header named in `Connection`) are removed in both directions. Forwarding headers are
rebuilt by the proxy: from an untrusted peer, the client's own `X-Forwarded-*` are discarded so
it cannot choose its identity; from a trusted proxy they are extended.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Rebuilt by the proxy (or answered by it: `Expect: 100-continue` was already handled).
REBUILT_REQUEST_HEADERS = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "via", "expect"}
)
# Never sent upstream: the decision-trace token header's default name (it carries the admin
# token; pipeline/explain.py), whether or not tracing is on. A custom `explain.trace_header`
# is removed by the forward stage while tracing is on.
NEVER_FORWARDED = frozenset({"x-edge-trace-token"})
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | REBUILT_REQUEST_HEADERS | NEVER_FORWARDED
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"content-length"}
VIA_TOKEN = "1.1 openflare"


def connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    )


def upstream_request_headers(
    headers: CIMultiDictProxy[str],
    *,
    request_id: str,
    peer_ip: str,
    peer_trusted: bool,
    scheme: str,
    pass_host: bool,
    dropped: frozenset[str] = DROPPED_REQUEST_HEADERS,
) -> list[tuple[str, str]]:
    """The headers to send upstream, in the client's order, duplicates kept. `dropped`: the
    lowercase names never passed on (DROPPED_REQUEST_HEADERS and maybe more)."""
    drop = dropped
    if "Connection" in headers:
        drop = drop | connection_tokens(headers)
    if not pass_host:
        drop = drop | {"host"}
    out = [(name, value) for name, value in headers.items() if name.lower() not in drop]
    prior_for = ", ".join(headers.getall("X-Forwarded-For", ())) if peer_trusted else ""
    out.append(("X-Forwarded-For", f"{prior_for}, {peer_ip}" if prior_for else peer_ip))
    proto = headers.get("X-Forwarded-Proto") if peer_trusted else None
    out.append(("X-Forwarded-Proto", proto or scheme))
    forwarded_host = headers.get("X-Forwarded-Host") if peer_trusted else None
    host = forwarded_host or headers.get("Host")
    if host:
        out.append(("X-Forwarded-Host", host))
    prior_via = ", ".join(headers.getall("Via", ()))
    out.append(("Via", f"{prior_via}, {VIA_TOKEN}" if prior_via else VIA_TOKEN))
    out.append(("X-Request-ID", request_id))
    return out


def client_response_headers(headers: CIMultiDictProxy[str]) -> Iterable[tuple[str, str]]:
    """The origin's response headers minus hop-by-hop ones and `Content-Length` (set apart)."""
    drop = DROPPED_RESPONSE_HEADERS
    if "Connection" in headers:
        drop = drop | connection_tokens(headers)
    return [(name, value) for name, value in headers.items() if name.lower() not in drop]
