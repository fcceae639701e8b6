"""The shared HTTP cache through the real proxy and test origin.

Every test uses its own URL (a unique `u` query parameter) and counts origin hits exactly: the
test origin counts requests per path, so each test resets the counters first and uses a path
of its own where counts matter.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from harness import Stack

if TYPE_CHECKING:
    from redis_support import RedisServer

pytest_plugins = ("redis_support",)

CUSTOM = "/cache/custom"


def unique() -> str:
    return uuid.uuid4().hex[:12]


def get(client: httpx.Client, path: str, **params: Any) -> httpx.Response:
    return client.get(path, params=params)


def origin_seq(response: httpx.Response) -> str:
    return response.headers["x-origin-seq"]


@pytest.fixture(autouse=True)
def _fresh_counts(stack: Stack) -> None:
    stack.reset_hits()
    httpx.post(f"{stack.origin_url}/__fail", params={"mode": "off"}, timeout=5.0)


# --- storing and reuse ------------------------------------------------------------------------


def test_store_then_hit_without_reaching_origin(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    first = get(client, CUSTOM, cc="public, max-age=60", u=u)
    second = get(client, CUSTOM, cc="public, max-age=60", u=u)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-edge-cache"] == "STORE"
    assert first.headers["cache-status"] == "OpenFlare; fwd=miss; stored"
    assert second.headers["x-edge-cache"] == "HIT"
    assert second.headers["cache-status"].startswith("OpenFlare; hit; ttl=")
    # just stored: at most the up-to-1 s apparent age of the origin's whole-second Date
    assert int(second.headers["age"]) in (0, 1)
    assert origin_seq(second) == origin_seq(first)
    assert second.content == first.content
    assert stack.hits(CUSTOM) == 1


def test_age_grows_while_resident(client: httpx.Client) -> None:
    u = unique()
    get(client, CUSTOM, cc="max-age=60", u=u)
    time.sleep(1.2)
    hit = get(client, CUSTOM, cc="max-age=60", u=u)
    assert hit.headers["x-edge-cache"] == "HIT"
    # resident 1.2 s, plus up to 1 s of apparent age from the origin's whole-second Date
    age = int(hit.headers["age"])
    assert 1 <= age <= 2
    assert int(hit.headers["x-edge-cache-ttl"]) in (59 - age, 60 - age)


def test_query_order_does_not_change_the_key(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    first = client.get(f"{CUSTOM}?cc=max-age%3D60&u={u}&a=1&b=2")
    second = client.get(f"{CUSTOM}?b=2&a=1&u={u}&cc=max-age%3D60")
    assert first.headers["x-edge-cache"] == "STORE"
    assert second.headers["x-edge-cache"] == "HIT"
    assert stack.hits(CUSTOM) == 1


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"cc": "no-store, max-age=60"}, "no-store"),
        ({"cc": "private, max-age=60"}, "private"),
        ({"cc": "public, max-age=60", "set_cookie": "sid=1"}, "set-cookie"),
        ({"cc": "max-age=60", "vary": "*"}, "vary-star"),
        ({}, "no-freshness"),  # no freshness information and no validators: never reused
        ({"cc": "max-age=60", "status": "206"}, "status"),
    ],
)
def test_not_storable(
    stack: Stack, client: httpx.Client, params: dict[str, str], reason: str
) -> None:
    u = unique()
    first = get(client, CUSTOM, u=u, **params)
    client.cookies.clear()  # a Set-Cookie answer must not turn the next request into a bypass
    second = get(client, CUSTOM, u=u, **params)
    assert first.headers["x-edge-cache"] == second.headers["x-edge-cache"] == "MISS"
    assert second.headers["cache-status"] == f"OpenFlare; fwd=miss; detail={reason}"
    assert origin_seq(first) != origin_seq(second)
    assert stack.hits(CUSTOM) == 2


@pytest.mark.parametrize(
    ("params", "cached"),
    [
        ({"cc": "max-age=0, s-maxage=60"}, True),  # s-maxage wins for a shared cache
        ({"cc": "s-maxage=0, max-age=60"}, False),
        ({"cc": "no-store", "cdn_cc": "max-age=60"}, True),  # RFC 9213: targeted field wins
        ({"cc": "max-age=60", "cdn_cc": "no-store"}, False),
        ({"cc": "max-age=abc"}, False),  # invalid freshness reads as stale
        ({"cc": "max-age=60, max-age=0"}, False),  # conflicting duplicates read as stale
        ({"cc": "MAX-AGE=60"}, True),  # directive names are case-insensitive
        ({"cc": "public, max-age=60", "status": "404"}, True),
        ({"cc": "max-age=60", "status": "299"}, True),
    ],
)
def test_freshness_sources(
    stack: Stack, client: httpx.Client, params: dict[str, str], cached: bool
) -> None:
    u = unique()
    get(client, CUSTOM, u=u, **params)
    second = get(client, CUSTOM, u=u, **params)
    assert (second.headers["x-edge-cache"] == "HIT") is cached
    assert stack.hits(CUSTOM) == (1 if cached else 2)


def test_expires_gives_freshness(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    expires = "Fri, 01 Jan 2100 00:00:00 GMT"
    get(client, CUSTOM, u=u, expires=expires)
    second = get(client, CUSTOM, u=u, expires=expires)
    assert second.headers["x-edge-cache"] == "HIT"
    past = get(client, CUSTOM, u=u + "p", expires="Thu, 01 Jan 1970 00:00:00 GMT")
    again = get(client, CUSTOM, u=u + "p", expires="Thu, 01 Jan 1970 00:00:00 GMT")
    assert past.headers["x-edge-cache"] == "MISS" and again.headers["x-edge-cache"] == "MISS"


def test_origin_date_is_kept_as_sent(client: httpx.Client, stack: Stack) -> None:
    direct = httpx.get(f"{stack.origin_url}{CUSTOM}", params={"u": unique()})
    proxied = get(client, CUSTOM, u=unique())
    assert direct.headers["date"].endswith("GMT")
    assert proxied.headers.get_list("date") == [proxied.headers["date"]]
    body = proxied.json()
    # the origin's Date is produced from the same clock reading as its X-Origin-Time
    assert abs(float(body["ts"]) - time.time()) < 5


# --- request directives -----------------------------------------------------------------------


def test_only_if_cached(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    miss = client.get(
        CUSTOM, params={"u": u, "cc": "max-age=60"}, headers={"Cache-Control": "only-if-cached"}
    )
    assert miss.status_code == 504
    assert stack.hits(CUSTOM) == 0
    get(client, CUSTOM, u=u, cc="max-age=60")
    hit = client.get(
        CUSTOM, params={"u": u, "cc": "max-age=60"}, headers={"Cache-Control": "only-if-cached"}
    )
    assert hit.status_code == 200 and hit.headers["x-edge-cache"] == "HIT"


def test_request_no_cache_revalidates(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=60", "etag": "v1"}
    first = client.get(CUSTOM, params=params)
    forced = client.get(CUSTOM, params=params, headers={"Cache-Control": "no-cache"})
    assert forced.headers["x-edge-cache"] == "REVALIDATED"
    assert forced.content == first.content  # the origin answered 304: stored body reused
    assert stack.hits(CUSTOM) == 2
    after = client.get(CUSTOM, params=params, headers={"Cache-Control": "max-age=0"})
    assert after.headers["x-edge-cache"] == "REVALIDATED"
    assert stack.hits(CUSTOM) == 3


def test_max_stale_and_min_fresh(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=1"}
    client.get(CUSTOM, params=params)
    fresh_enough = client.get(CUSTOM, params=params, headers={"Cache-Control": "min-fresh=30"})
    assert fresh_enough.headers["x-edge-cache"] == "EXPIRED"  # not fresh enough: refetched
    time.sleep(1.3)
    stale_ok = client.get(CUSTOM, params=params, headers={"Cache-Control": "max-stale=60"})
    assert stale_ok.headers["x-edge-cache"] == "HIT"
    assert stack.hits(CUSTOM) == 2


# --- validation ---------------------------------------------------------------------------------


def test_stale_entry_is_revalidated_with_etag(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=1", "etag": "v1"}
    first = client.get(CUSTOM, params=params)
    time.sleep(1.2)
    second = client.get(CUSTOM, params=params)
    assert second.headers["x-edge-cache"] == "REVALIDATED"
    assert second.headers["cache-status"] == "OpenFlare; fwd=stale; stored"
    assert second.content == first.content
    third = client.get(CUSTOM, params=params)
    assert third.headers["x-edge-cache"] == "HIT"  # the 304 refreshed the freshness
    assert stack.hits(CUSTOM) == 2


def test_stale_entry_is_revalidated_with_last_modified(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=1", "last_modified": "Mon, 01 Jan 2024 00:00:00 GMT"}
    client.get(CUSTOM, params=params)
    time.sleep(1.2)
    assert client.get(CUSTOM, params=params).headers["x-edge-cache"] == "REVALIDATED"
    assert stack.hits(CUSTOM) == 2


def test_changed_resource_replaces_the_entry(stack: Stack, client: httpx.Client) -> None:
    client.post("/cache/etag/bump")
    first = client.get("/cache/etag", params={"max_age": 1})
    stack.reset_hits()
    client.post("/cache/etag/bump")
    time.sleep(1.2)
    second = client.get("/cache/etag", params={"max_age": 1})
    assert second.headers["x-edge-cache"] == "EXPIRED"  # the origin answered 200, not 304
    assert second.json()["version"] == first.json()["version"] + 1
    assert stack.hits("/cache/etag") == 1


def test_client_conditionals_answered_from_cache(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=60", "etag": "v7"}
    client.get(CUSTOM, params=params)
    not_modified = client.get(CUSTOM, params=params, headers={"If-None-Match": 'W/"v7", "x"'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == '"v7"'
    changed = client.get(CUSTOM, params=params, headers={"If-None-Match": '"v8"'})
    assert changed.status_code == 200 and changed.headers["x-edge-cache"] == "HIT"
    assert stack.hits(CUSTOM) == 1


# --- stale serving ----------------------------------------------------------------------------


def test_stale_while_revalidate_serves_stale_and_refreshes_once(
    stack: Stack, client: httpx.Client
) -> None:
    u = unique()
    # the refresh takes 500 ms at the origin, so all ten requests land while it runs
    # max-age=4 leaves the refreshed copy fresh for a few seconds even with the origin's
    # whole-second Date and the 0.5 s response delay counted into its age
    params = {"u": u, "cc": "max-age=4, stale-while-revalidate=30", "delay_ms": "500"}
    first = client.get(CUSTOM, params=params)
    time.sleep(4.2)
    with ThreadPoolExecutor(10) as pool:
        stale = list(pool.map(lambda _: client.get(CUSTOM, params=params), range(10)))
    assert {r.headers["x-edge-cache"] for r in stale} == {"STALE"}
    assert {origin_seq(r) for r in stale} == {origin_seq(first)}
    # the origin counts the refresh when it arrives; the new copy is stored 0.5 s later.
    # Polling is safe: while that one refresh runs, stale answers start no other.
    deadline = time.monotonic() + 10
    refreshed = client.get(CUSTOM, params=params)
    while refreshed.headers["x-edge-cache"] != "HIT" and time.monotonic() < deadline:
        time.sleep(0.1)
        refreshed = client.get(CUSTOM, params=params)
    assert refreshed.headers["x-edge-cache"] == "HIT"
    assert origin_seq(refreshed) != origin_seq(first)
    assert stack.hits(CUSTOM) == 2  # one background refresh for all the stale answers


def test_stale_if_error_on_origin_5xx(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=1, stale-if-error=60"}
    first = client.get(CUSTOM, params=params)
    time.sleep(1.2)
    httpx.post(f"{stack.origin_url}/__fail", params={"mode": "503"}).raise_for_status()
    stale = client.get(CUSTOM, params=params)
    assert stale.status_code == 200
    assert stale.headers["x-edge-cache"] == "STALE"
    assert origin_seq(stale) == origin_seq(first)


def test_must_revalidate_forbids_stale_on_error(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=1, stale-if-error=60, must-revalidate"}
    client.get(CUSTOM, params=params)
    time.sleep(1.2)
    httpx.post(f"{stack.origin_url}/__fail", params={"mode": "503"}).raise_for_status()
    assert client.get(CUSTOM, params=params).status_code == 503


@pytest.mark.local_only
def test_stale_if_error_when_origin_is_down(proxy_factory: Any, origin_factory: Any) -> None:
    origin = origin_factory()
    proxy = proxy_factory(origin_url=origin.url)
    with httpx.Client(base_url=proxy.url, headers={"Host": "127.0.0.1"}, timeout=10) as c:
        params = {"u": unique(), "cc": "max-age=1, stale-if-error=60"}
        first = c.get(CUSTOM, params=params)
        origin.stop()
        time.sleep(1.2)
        stale = c.get(CUSTOM, params=params)
        assert stale.status_code == 200 and stale.headers["x-edge-cache"] == "STALE"
        assert origin_seq(stale) == origin_seq(first)
        gone = c.get(CUSTOM, params={"u": unique(), "cc": "max-age=60"})
        assert gone.status_code == 502 and gone.headers["x-edge-cache"] == "ERROR"


# --- variants, credentials, cookies -----------------------------------------------------------


def test_vary_keeps_variants_apart(stack: Stack, client: httpx.Client) -> None:
    path = "/cache/vary/Accept-Language"
    u = unique()
    en = client.get(path, params={"u": u}, headers={"Accept-Language": "en"})
    fr = client.get(path, params={"u": u}, headers={"Accept-Language": "fr"})
    en_again = client.get(path, params={"u": u}, headers={"Accept-Language": "en"})
    assert en.json()["value"] == "en" and fr.json()["value"] == "fr"
    assert en_again.headers["x-edge-cache"] == "HIT" and en_again.json()["value"] == "en"
    assert stack.hits(path) == 2


def test_vary_accept_encoding_is_normalized(stack: Stack, client: httpx.Client) -> None:
    path = "/cache/vary/Accept-Encoding"
    u = unique()
    client.get(path, params={"u": u}, headers={"Accept-Encoding": "gzip, br"})
    same = client.get(path, params={"u": u}, headers={"Accept-Encoding": "br;q=0.9,  gzip"})
    other = client.get(path, params={"u": u}, headers={"Accept-Encoding": "identity"})
    assert same.headers["x-edge-cache"] == "HIT"
    assert other.headers["x-edge-cache"] == "STORE"
    assert stack.hits(path) == 2


def test_authorization_requires_shareable_response(stack: Stack, client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer secret-user-token"}
    u = unique()
    private = {"u": u, "cc": "max-age=60"}
    client.get(CUSTOM, params=private, headers=auth)
    again = client.get(CUSTOM, params=private, headers=auth)
    assert again.headers["x-edge-cache"] == "MISS"  # RFC 9111 §3.5: not stored
    anonymous = client.get(CUSTOM, params=private)
    assert anonymous.headers["x-edge-cache"] == "STORE"
    with_auth = client.get(CUSTOM, params=private, headers=auth)
    assert with_auth.headers["x-edge-cache"] == "MISS"  # not served to credentialed requests
    public = {"u": u + "p", "cc": "public, max-age=60"}
    client.get(CUSTOM, params=public, headers=auth)
    assert client.get(CUSTOM, params=public).headers["x-edge-cache"] == "HIT"


def test_cookie_requests_bypass(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=60"}
    client.get(CUSTOM, params=params)
    with_cookie = client.get(CUSTOM, params=params, headers={"Cookie": "session=abc"})
    assert with_cookie.headers["x-edge-cache"] == "BYPASS"
    assert with_cookie.headers["cache-status"] == "OpenFlare; fwd=bypass"
    assert stack.hits(CUSTOM) == 2


def test_range_requests_pass_through(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    ranged = client.get(CUSTOM, params={"u": u, "cc": "max-age=60"}, headers={"Range": "bytes=0-3"})
    assert ranged.headers["x-edge-cache"] == "BYPASS"
    plain = client.get(CUSTOM, params={"u": u, "cc": "max-age=60"})
    assert plain.headers["x-edge-cache"] == "STORE"


def test_rule_not_eligible_bypasses(stack: Stack, client: httpx.Client) -> None:
    first = client.get("/api/time")
    assert first.headers["x-edge-cache"] == "BYPASS"


def test_set_cookie_and_tag_headers_never_leak_from_cache(
    stack: Stack, client: httpx.Client
) -> None:
    tag = unique()
    first = client.get("/cache/tags", params={"tags": f"{tag},other"})
    hit = client.get("/cache/tags", params={"tags": f"{tag},other"})
    assert hit.headers["x-edge-cache"] == "HIT"
    for response in (first, hit):
        assert "cache-tag" not in response.headers
        assert "surrogate-key" not in response.headers


# --- collapsing, large and truncated bodies, HEAD ---------------------------------------------


def test_concurrent_misses_collapse_into_one_origin_request(
    stack: Stack, client: httpx.Client
) -> None:
    u = unique()
    params = {"u": u, "cc": "max-age=60", "delay_ms": "400"}
    with ThreadPoolExecutor(100) as pool:
        responses = list(pool.map(lambda _: stack.client().get(CUSTOM, params=params), range(100)))
    assert [r.status_code for r in responses] == [200] * 100
    assert len({r.content for r in responses}) == 1
    assert stack.hits(CUSTOM) == 1
    statuses = [r.headers["x-edge-cache"] for r in responses]
    assert statuses.count("STORE") == 1 and statuses.count("HIT") == 99


def test_not_storable_response_is_never_shared_with_waiters(
    stack: Stack, client: httpx.Client
) -> None:
    params = {"u": unique(), "cc": "private, max-age=60", "delay_ms": "300"}
    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: stack.client().get(CUSTOM, params=params), range(5)))
    assert len({origin_seq(r) for r in responses}) == 5  # each fetched for itself
    assert stack.hits(CUSTOM) == 5


@pytest.mark.local_only
def test_object_above_max_object_bytes_streams_through(proxy_factory: Any, stack: Stack) -> None:
    proxy = proxy_factory({"cache": {"max_object_bytes": 100_000}})
    with httpx.Client(base_url=proxy.url, headers={"Host": "127.0.0.1"}, timeout=10) as c:
        params = {"u": unique(), "cc": "max-age=60", "size": "300000"}
        first = c.get(CUSTOM, params=params)
        second = c.get(CUSTOM, params=params)
    assert len(first.content) == len(second.content) == 300_000
    assert first.content == second.content  # the test origin's deterministic pattern
    assert second.headers["x-edge-cache"] == "MISS"
    assert second.headers["cache-status"] == "OpenFlare; fwd=miss; detail=too-large"
    assert stack.hits(CUSTOM) == 2


def test_truncated_origin_body_is_never_cached(stack: Stack, client: httpx.Client) -> None:
    params = {"declared": "5000", "sent": "1000", "cc": "max-age=60", "u": unique()}
    first = client.get("/truncated", params=params)
    assert first.status_code == 502
    assert first.headers["x-edge-cache"] == "ERROR"
    second = client.get("/truncated", params=params)
    assert second.status_code == 502
    assert stack.hits("/truncated") == 2


def test_head_miss_does_not_store_an_empty_body(stack: Stack, client: httpx.Client) -> None:
    params = {"u": unique(), "cc": "max-age=60"}
    head = client.head(CUSTOM, params=params)
    assert head.status_code == 200 and head.headers["x-edge-cache"] == "MISS"
    full = client.get(CUSTOM, params=params)
    assert full.headers["x-edge-cache"] == "STORE" and full.json()["endpoint"] == "custom"
    head_hit = client.head(CUSTOM, params=params)
    assert head_hit.headers["x-edge-cache"] == "HIT"
    assert head_hit.headers["content-length"] == str(len(full.content))
    assert stack.hits(CUSTOM) == 2


# --- poisoning and invalidation ---------------------------------------------------------------


def test_unkeyed_headers_do_not_reach_origin_on_cacheable_requests(client: httpx.Client) -> None:
    params = {"u": unique(), "cc": "max-age=60", "echo_headers": "true"}
    response = client.get(
        CUSTOM,
        params=params,
        headers={
            "X-Forwarded-Host": "evil.example",
            "X-Original-URL": "/admin",
            "X-Rewrite-URL": "/admin",
            "X-Forwarded-Scheme": "nothttps",
            "X-HTTP-Method-Override": "DELETE",
        },
    )
    seen = {name.lower(): value for name, value in response.json()["headers"]}
    assert "x-original-url" not in seen and "x-rewrite-url" not in seen
    assert "x-forwarded-scheme" not in seen and "x-http-method-override" not in seen
    assert seen["x-forwarded-host"] == response.request.headers["host"]


def test_unsafe_method_invalidates_the_url_and_location(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    target = {"u": u, "cc": "max-age=60"}
    elsewhere = {"u": u + "x", "cc": "max-age=60"}
    untouched = {"u": u + "y", "cc": "max-age=60"}
    for params in (target, elsewhere, untouched):
        get(client, CUSTOM, **params)
    other_url = client.build_request("GET", CUSTOM, params=elsewhere).url
    location = f"{other_url.path}?{other_url.query.decode()}"
    # a successful PUT to the target URL that names another same-origin URL in Location
    assert client.put(CUSTOM, params={**target}, headers={"X-Ignored": "1"}).status_code == 200
    assert get(client, CUSTOM, **target).headers["x-edge-cache"] == "STORE"
    posted = client.post(CUSTOM, params={"u": u + "z", "location": location})
    assert posted.status_code == 200
    assert get(client, CUSTOM, **elsewhere).headers["x-edge-cache"] == "STORE"
    assert get(client, CUSTOM, **untouched).headers["x-edge-cache"] == "HIT"


def test_failed_unsafe_request_does_not_invalidate(stack: Stack, client: httpx.Client) -> None:
    params = {"u": unique(), "cc": "max-age=60"}
    get(client, CUSTOM, **params)
    httpx.post(f"{stack.origin_url}/__fail", params={"mode": "500"}).raise_for_status()
    assert client.delete(CUSTOM, params=params).status_code == 500  # same URL, failed
    httpx.post(f"{stack.origin_url}/__fail", params={"mode": "off"}).raise_for_status()
    assert get(client, CUSTOM, **params).headers["x-edge-cache"] == "HIT"
    assert client.delete(CUSTOM, params=params).status_code == 200  # same URL, succeeded
    assert get(client, CUSTOM, **params).headers["x-edge-cache"] == "STORE"


# --- purge API ----------------------------------------------------------------------------------


def purge(stack: Stack, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    with stack.admin() as admin:
        response = admin.post(f"/admin/cache/{endpoint}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_purge_url_removes_every_variant(stack: Stack, client: httpx.Client) -> None:
    path = "/cache/vary/Accept-Language"
    u = unique()
    client.get(path, params={"u": u}, headers={"Accept-Language": "en"})
    client.get(path, params={"u": u}, headers={"Accept-Language": "de"})
    url = f"http://{stack.host_header}{path}?u={u}"
    assert purge(stack, "purge", {"url": url}) == {"purged": 2, "soft": False}
    again = client.get(path, params={"u": u}, headers={"Accept-Language": "en"})
    assert again.headers["x-edge-cache"] == "STORE"


def test_purge_prefix_and_all(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    get(client, CUSTOM, u=u, cc="max-age=60")
    get(client, "/cache/public-long", u=u)
    result = purge(stack, "purge-prefix", {"prefix": "/cache/custom"})
    assert result["purged"] >= 1
    assert get(client, CUSTOM, u=u, cc="max-age=60").headers["x-edge-cache"] == "STORE"
    assert get(client, "/cache/public-long", u=u).headers["x-edge-cache"] == "HIT"
    assert purge(stack, "purge-all", {})["purged"] >= 2
    assert get(client, "/cache/public-long", u=u).headers["x-edge-cache"] == "STORE"


def test_purge_tags_match_exactly(stack: Stack, client: httpx.Client) -> None:
    t = unique()
    client.get("/cache/tags", params={"tags": f"/items-{t}"})
    client.get("/cache/tags", params={"tags": f"/items-{t}/1"})
    assert purge(stack, "purge-tags", {"tags": [f"/items-{t}"]}) == {"purged": 1, "soft": False}
    kept = client.get("/cache/tags", params={"tags": f"/items-{t}/1"})
    assert kept.headers["x-edge-cache"] == "HIT"
    gone = client.get("/cache/tags", params={"tags": f"/items-{t}"})
    assert gone.headers["x-edge-cache"] == "STORE"


def test_soft_purge_keeps_stale_serving(stack: Stack, client: httpx.Client) -> None:
    params = {"u": unique(), "cc": "max-age=60, stale-while-revalidate=30"}
    first = client.get(CUSTOM, params=params)
    url = str(client.build_request("GET", CUSTOM, params=params).url)
    assert purge(stack, "purge", {"url": url, "soft": True}) == {"purged": 1, "soft": True}
    stale = client.get(CUSTOM, params=params)
    assert stale.headers["x-edge-cache"] == "STALE"
    assert origin_seq(stale) == origin_seq(first)


def test_purge_requires_token_and_valid_body(stack: Stack) -> None:
    with stack.admin(token=None) as anonymous:
        assert anonymous.post("/admin/cache/purge-all", json={}).status_code == 401
    with stack.admin() as admin:
        bad = admin.post("/admin/cache/purge", json={"url": "not a url"})
        assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
        assert admin.post("/admin/cache/purge-tags", json={"tags": []}).status_code == 400
        assert admin.post("/admin/cache/purge", content=b"{oops").status_code == 400


def test_stats_count_operations(stack: Stack, client: httpx.Client) -> None:
    with stack.admin() as admin:
        before = admin.get("/admin/cache/stats").json()
        u = unique()
        get(client, CUSTOM, u=u, cc="max-age=60")
        get(client, CUSTOM, u=u, cc="max-age=60")
        after = admin.get("/admin/cache/stats").json()
    assert after["store"] == "memory"
    assert after["stores"] == before["stores"] + 1
    assert after["hits"] == before["hits"] + 1
    assert after["entries"] >= 1 and after["size_bytes"] > 0
    assert set(after) >= {"max_entries", "max_bytes", "bypasses", "evictions", "hit_ratio"}


def test_cache_metrics_exported(stack: Stack, client: httpx.Client) -> None:
    u = unique()
    get(client, CUSTOM, u=u, cc="max-age=60")
    get(client, CUSTOM, u=u, cc="max-age=60")
    text = httpx.get(f"{stack.admin_url}/metrics").text
    assert 'openflare_cache_operations_total{operation="hit"}' in text
    assert 'openflare_cache_operations_total{operation="store"}' in text


# --- pass-through of whatever a real origin sends ---------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "PURGE", "PROPFIND"])
def test_any_method_passes_through(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/debug/echo")
    assert response.status_code == 200
    assert response.json()["method"] == method


@pytest.mark.parametrize("status", [299, 499, 599])
def test_unusual_statuses_pass_through(client: httpx.Client, status: int) -> None:
    assert client.get(f"/error/{status}").status_code == status


def test_unknown_content_encoding_untouched(client: httpx.Client) -> None:
    response = client.get("/headers/set", params={"Content-Encoding": "x-custom-enc"})
    assert response.headers["content-encoding"] == "x-custom-enc"


# --- Redis store: one cache for several proxies -----------------------------------------------


@pytest.mark.local_only
def test_redis_store_is_shared_and_purges_everywhere(
    proxy_factory: Any, redis_server: RedisServer, stack: Stack
) -> None:
    overrides = {"cache": {"store": "redis", "redis_url": redis_server.url}}
    a = proxy_factory(overrides)
    b = proxy_factory(overrides)
    params = {"u": unique(), "cc": "max-age=60"}
    with (
        httpx.Client(base_url=a.url, headers={"Host": "127.0.0.1"}, timeout=10) as on_a,
        httpx.Client(base_url=b.url, headers={"Host": "127.0.0.1"}, timeout=10) as on_b,
    ):
        stored = on_a.get(CUSTOM, params=params)
        shared = on_b.get(CUSTOM, params=params)
        assert stored.headers["x-edge-cache"] == "STORE"
        assert shared.headers["x-edge-cache"] == "HIT"
        assert origin_seq(shared) == origin_seq(stored)
        assert stack.hits(CUSTOM) == 1
        url = str(on_b.build_request("GET", CUSTOM, params=params).url).replace(
            b.url, "http://127.0.0.1"
        )
        purged = httpx.post(
            f"{b.admin_url}/admin/cache/purge",
            json={"url": url},
            headers={"Authorization": f"Bearer {b.token}"},
        )
        assert purged.json() == {"purged": 1, "soft": False}
        assert on_a.get(CUSTOM, params=params).headers["x-edge-cache"] == "STORE"
        stats = httpx.get(
            f"{a.admin_url}/admin/cache/stats", headers={"Authorization": f"Bearer {a.token}"}
        ).json()
        assert stats["store"] == "redis" and stats["entries"] == 1


@pytest.mark.local_only
def test_redis_outage_degrades_to_pass_through(
    proxy_factory: Any, redis_server: RedisServer, stack: Stack
) -> None:
    proxy = proxy_factory({"cache": {"store": "redis", "redis_url": redis_server.url}})
    params = {"u": unique(), "cc": "max-age=60"}
    with httpx.Client(base_url=proxy.url, headers={"Host": "127.0.0.1"}, timeout=10) as c:
        assert c.get(CUSTOM, params=params).headers["x-edge-cache"] == "STORE"
        redis_server.stop()
        down = [c.get(CUSTOM, params=params) for _ in range(3)]
        assert [r.status_code for r in down] == [200, 200, 200]
        assert stack.hits(CUSTOM) == 4  # every request reached the origin, none failed
        redis_server.start()
        assert c.get(CUSTOM, params=params).headers["x-edge-cache"] == "STORE"
        assert c.get(CUSTOM, params=params).headers["x-edge-cache"] == "HIT"
    record = proxy.wait_log(event="cache_store_error")
    assert record["store"] == "redis"
    metrics = httpx.get(f"{proxy.admin_url}/metrics").text
    assert 'openflare_cache_operations_total{operation="error"}' in metrics
