"""Cache poisoning and cache deception, one test per case (e2e/test_cache.py covers the RFC 9111
behaviour these build on).

The origin is the raw-bytes recording origin (testsite raw_origin.py): `/reflect/...` answers
`public, max-age=60` with the request it received as the body — the most poisonable origin
there is: whatever reaches it ends up in the cached response — and `/account...` is a per-user
page that ignores path suffixes, the way many frameworks do. The cache rules add the set-up that
invites deception: everything ending in a static extension is cacheable for an hour, the rule
TTL replacing the origin's own freshness.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import ProxyProcess, RawResponse, connect, read_response

pytestmark = pytest.mark.local_only

CACHE_RULES = {
    "rules": [
        {
            "id": "static-extensions",
            "path_regex": r"\.(css|js|png|jpg|svg|ico)$",
            "cache": {"eligible": True, "ttl_seconds": 3600, "origin_wins": False},
        },
        {  # a rule where cookies do not bypass the cache (e.g. analytics cookies)
            "id": "cookies-allowed",
            "path_prefix": "/reflect/cookies/",
            "cache": {"eligible": True, "bypass_on_cookie": False},
        },
    ]
}


@pytest.fixture(scope="module")
def edge(
    module_proxy_factory: Callable[..., ProxyProcess],
    raw_origin: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> ProxyProcess:
    rules = tmp_path_factory.mktemp("poison") / "cache-rules.yaml"
    rules.write_text(yaml.safe_dump(CACHE_RULES, sort_keys=False), encoding="utf-8")
    return module_proxy_factory(
        {"rule_files": {"cache": str(Path(rules)), "waf": None, "rate_limit": None}},
        origin_url=raw_origin.url,
    )


def get(
    proxy: ProxyProcess,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    method: str = "GET",
    host: str = "127.0.0.1",
) -> RawResponse:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    with connect("127.0.0.1", proxy.port, 10.0) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return read_response(sock)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def origin_hits(raw_origin: Any, path: str) -> int:
    return sum(1 for r in raw_origin.requests() if r.path == path)


# --------------------------------------------------------------------------------------------
# unkeyed headers cannot change a cached response

UNKEYED = [
    ("X-Forwarded-Host", "evil.example"),
    ("X-Host", "evil.example"),
    ("X-Original-Host", "evil.example"),
    ("X-Forwarded-Server", "evil.example"),
    ("Forwarded", "host=evil.example;proto=https"),
    ("X-Original-URL", "/admin/evil"),
    ("X-Rewrite-URL", "/admin/evil"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X-Forwarded-Scheme", "evilscheme"),
    ("X-Forwarded-Proto", "evilscheme"),
    ("X-Forwarded-Port", "6666"),
    ("X-Forwarded-Prefix", "/evil"),
]


@pytest.mark.parametrize(("header", "value"), UNKEYED, ids=[h for h, _ in UNKEYED])
def test_unkeyed_header_cannot_poison_the_cache(
    edge: ProxyProcess, raw_origin: Any, header: str, value: str
) -> None:
    path = "/reflect/" + unique(header.lower())
    poisoned = get(edge, path, {header: value})
    assert poisoned.status == 200
    assert poisoned.header("X-Edge-Cache") == "STORE"
    assert value.encode() not in poisoned.body  # the origin never saw it
    clean = get(edge, path)
    assert clean.header("X-Edge-Cache") == "HIT"
    assert clean.body == poisoned.body
    # and once cached, the header cannot replace or bypass the entry either
    again = get(edge, path, {header: value})
    assert (again.header("X-Edge-Cache"), again.body) == ("HIT", poisoned.body)
    assert origin_hits(raw_origin, path) == 1


def test_fat_get_body_cannot_poison_the_cache(edge: ProxyProcess, raw_origin: Any) -> None:
    path = "/reflect/" + unique("fat")
    fat = get(edge, path, body=b"poison-body")
    assert fat.header("X-Edge-Cache") == "BYPASS"  # neither looked up nor stored
    assert fat.body.endswith(b"poison-body")  # the origin did get it, as sent
    clean = get(edge, path)
    assert clean.header("X-Edge-Cache") == "STORE"
    assert b"poison-body" not in clean.body
    assert get(edge, path, body=b"poison-body").header("X-Edge-Cache") == "BYPASS"
    hit = get(edge, path)
    assert (hit.header("X-Edge-Cache"), hit.body) == ("HIT", clean.body)


def test_method_override_on_a_fill_never_reaches_the_origin(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    path = "/reflect/" + unique("override")
    get(edge, path, {"X-HTTP-Method-Override": "PURGE"})
    (request,) = [r for r in raw_origin.requests() if r.path == path]
    assert request.method == "GET"
    assert request.header("X-HTTP-Method-Override") is None


def test_host_header_is_part_of_the_key(edge: ProxyProcess, raw_origin: Any) -> None:
    """Another Host is another cache entry (or no route at all), never a hit for another
    host's URL; two Host lines are refused."""
    path = "/reflect/" + unique("host")
    assert get(edge, path).header("X-Edge-Cache") == "STORE"
    other = get(edge, path, host="127.0.0.1:9")  # same route (the port is ignored), new key
    assert other.header("X-Edge-Cache") == "STORE"
    assert get(edge, path, host="evil.example").status == 404
    assert get(edge, path, {"Host": "evil.example"}).status == 400  # a second Host line
    assert origin_hits(raw_origin, path) == 2


# --------------------------------------------------------------------------------------------
# cache deception: path confusion never stores a private or no-store response

CONFUSED_PATHS = [
    "/account/profile/x.css",
    "/account;.css",
    "/account/profile;x.js",
    "/account%3B.css",
    "/account/profile/x%2ecss",
    "/account/profile/%2e%2e/x.png",
    "/%61ccount/x.css",
    "/account/profile/x.css?cb=1",
    "/account.css",
    "/accountx.ico",
]


@pytest.mark.parametrize("cache_control", ["private", "no-store", "private, max-age=600"])
@pytest.mark.parametrize("path", CONFUSED_PATHS)
def test_path_confusion_never_caches_a_private_response(
    edge: ProxyProcess, raw_origin: Any, path: str, cache_control: str
) -> None:
    secret = unique("victim-secret")
    sep = "&" if "?" in path else "?"
    target = f"{path}{sep}cc={cache_control.replace(' ', '%20').replace(',', '%2C')}"
    # the victim, logged in with a bearer token (a cookie would bypass the cache anyway)
    victim = get(edge, target, {"Authorization": f"Bearer {secret}"})
    assert victim.status == 200 and secret.encode() in victim.body
    assert victim.header("X-Edge-Cache") != "STORE"
    # the attacker, with no credentials, asks for the same URL
    for _ in range(2):
        attacker = get(edge, target)
        assert attacker.status == 200
        assert secret.encode() not in attacker.body
        assert attacker.header("X-Edge-Cache") != "HIT"


def test_victim_with_a_cookie_is_never_stored_even_without_cache_headers(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    """The origin forgot Cache-Control entirely; the extension rule would store it for an
    hour — but the victim's request carries a session cookie, so it bypasses."""
    secret = unique("cookie-secret")
    target = "/account/settings/style.css?cc="
    victim = get(edge, target, {"Cookie": f"session={secret}"})
    assert victim.header("X-Edge-Cache") == "BYPASS" and secret.encode() in victim.body
    attacker = get(edge, target)
    assert secret.encode() not in attacker.body


def test_encoded_slash_confusion_is_refused(edge: ProxyProcess, raw_origin: Any) -> None:
    before = len(raw_origin.requests())
    response = get(edge, "/account%2Fx.css", {"Authorization": "Bearer s"})
    assert response.status == 400
    assert len(raw_origin.requests()) == before


# --------------------------------------------------------------------------------------------
# credentialed responses are not served to others


def test_response_to_an_authorized_request_is_not_shared(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    """RFC 9111 §3.5: without public / s-maxage / must-revalidate it is not stored."""
    path = "/reflect/" + unique("auth")
    target = path + "?cc=max-age%3D60"
    secret = unique("token")
    first = get(edge, target, {"Authorization": f"Bearer {secret}"})
    assert first.header("X-Edge-Cache") == "MISS"
    anonymous = get(edge, target)
    assert anonymous.header("X-Edge-Cache") == "STORE"
    assert secret.encode() not in anonymous.body
    assert origin_hits(raw_origin, path) == 2


def test_authorized_request_is_not_answered_from_a_private_entry(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    """An anonymous fill (max-age only) may not answer a credentialed request: it gets its
    own origin response."""
    path = "/reflect/" + unique("auth-reuse")
    target = path + "?cc=max-age%3D60"
    assert get(edge, target).header("X-Edge-Cache") == "STORE"
    secret = unique("token")
    credentialed = get(edge, target, {"Authorization": f"Bearer {secret}"})
    assert credentialed.header("X-Edge-Cache") != "HIT"
    assert secret.encode() in credentialed.body
    assert get(edge, target).header("X-Edge-Cache") == "HIT"  # entry unchanged
    assert secret.encode() not in get(edge, target).body


def test_cookie_request_response_is_not_shared(edge: ProxyProcess, raw_origin: Any) -> None:
    path = "/reflect/" + unique("cookie")
    secret = unique("session")
    first = get(edge, path, {"Cookie": f"session={secret}"})
    assert first.header("X-Edge-Cache") == "BYPASS"
    anonymous = get(edge, path)
    assert secret.encode() not in anonymous.body


def test_private_response_is_not_shared_where_cookies_do_not_bypass(
    edge: ProxyProcess, raw_origin: Any
) -> None:
    """On a rule that lets cookie requests use the cache, the origin's `private` still keeps
    the cookie holder's response out of it."""
    path = "/reflect/cookies/" + unique("private")
    secret = unique("session")
    first = get(edge, path + "?cc=private%2C%20max-age%3D60", {"Cookie": f"session={secret}"})
    assert first.header("X-Edge-Cache") == "MISS" and secret.encode() in first.body
    anonymous = get(edge, path + "?cc=private%2C%20max-age%3D60")
    assert secret.encode() not in anonymous.body
    assert origin_hits(raw_origin, path) == 2
