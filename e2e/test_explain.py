"""Explainability end to end: decision traces (X-Edge-Trace, access log, /admin/trace/{id}),
Server-Timing, `POST /admin/explain` and `openflare explain`, on real proxy processes in front
of the real test origin.

One module proxy has tracing on for the admin token (`explain.trace_enabled`), a ring of 5
traces and Server-Timing on the `/cache/` route only; proxies of their own cover debug CIDRs and
the header cap. Counts are exact: the origin counts requests per path, buckets are exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from harness import ProxyProcess, Stack

pytestmark = pytest.mark.local_only

CUSTOM = "/cache/custom"
TOKEN_HEADER = "X-Edge-Trace-Token"
RING = 5
TRACED: dict[str, Any] = {
    "explain": {"trace_enabled": True, "trace_buffer_size": RING},
    "routing": {
        "routes": [
            {
                "id": "cached",
                "host": "127.0.0.1",
                "path_prefix": "/cache/",
                "upstream": "origin",
                "server_timing": True,
            },
            {"id": "local", "host": "127.0.0.1", "path_prefix": "/", "upstream": "origin"},
        ]
    },
}

ProxyFactory = Callable[..., ProxyProcess]


def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def traced(module_proxy_factory: ProxyFactory) -> ProxyProcess:
    return module_proxy_factory(TRACED)


@pytest.fixture
def http(traced: ProxyProcess) -> httpx.Client:
    return httpx.Client(base_url=traced.url, timeout=10.0)


@pytest.fixture
def admin(traced: ProxyProcess) -> httpx.Client:
    return httpx.Client(
        base_url=traced.admin_url, headers={"Authorization": f"Bearer {traced.token}"}, timeout=10
    )


@pytest.fixture(autouse=True)
def _fresh_counts(stack: Stack) -> None:
    stack.reset_hits()
    httpx.post(f"{stack.origin_url}/__fail", params={"mode": "off"}, timeout=5.0)


def traced_get(
    http: httpx.Client, proxy: ProxyProcess, path: str, **kwargs: Any
) -> tuple[httpx.Response, dict[str, Any]]:
    headers = {TOKEN_HEADER: proxy.token, **kwargs.pop("headers", {})}
    response = http.get(path, headers=headers, **kwargs)
    assert "x-edge-trace" in response.headers, dict(response.headers)
    return response, json.loads(response.headers["x-edge-trace"])


def stage(trace: dict[str, Any], name: str) -> dict[str, Any]:
    found = [entry for entry in trace["stages"] if entry["stage"] == name]
    assert len(found) == 1, trace["stages"]
    return found[0]


def explain(admin: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    response = admin.post("/admin/explain", json={"url": url, **fields})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- live traces --------------------------------------------------------------------------------


def test_miss_with_store_then_hit(
    stack: Stack, traced: ProxyProcess, http: httpx.Client, admin: httpx.Client
) -> None:
    params = {"u": unique(), "cc": "public, max-age=60"}
    first, trace = traced_get(http, traced, CUSTOM, params=params)
    assert first.headers["x-edge-cache"] == "STORE"
    assert trace["trigger"] == "token" and trace["route"] == "cached"
    assert trace["request"]["path"] == CUSTOM and trace["request"]["client_ip"] == "127.0.0.1"
    assert [s["stage"] for s in trace["stages"]] == [
        "waf",
        "ratelimit",
        "route",
        "cache",
        "upstream",
    ]
    assert stage(trace, "waf")["decision"] == "pass"
    limit = stage(trace, "ratelimit")
    assert limit["decision"] == "allow" and limit["spent"] is True
    assert limit["rules"][0]["bucket"] == "global|127.0.0.1"
    cache = stage(trace, "cache")
    assert cache["predicted"] == "MISS" and cache["status"] == "STORE"
    assert cache["key"].startswith("http://127.0.0.1:") and params["u"] in cache["key"]
    assert cache["collapsing"].startswith("leader")
    stored = cache["stored_now"]
    assert stored["freshness_source"] == "max-age" and stored["lifetime_s"] == 60
    assert stored["directives"] == {"public": None, "max-age": "60"}
    upstream = stage(trace, "upstream")
    assert upstream["status"] == 200 and upstream["target"] == stack.origin_url

    second, trace = traced_get(http, traced, CUSTOM, params=params)
    assert second.headers["x-edge-cache"] == "HIT"
    cache = stage(trace, "cache")
    assert cache["predicted"] == cache["decision"] == "HIT"
    assert cache["stored"]["fresh"] is True and cache["stored"]["ttl_s"] > 50
    assert "upstream" not in [s["stage"] for s in trace["stages"]]
    assert stack.hits(CUSTOM) == 1

    # the same trace in the access log and in the ring buffer
    request_id = second.headers["x-request-id"]
    line = traced.access_log(request_id)
    assert line["decision_trace"]["stages"][3]["decision"] == "HIT"
    kept = admin.get(f"/admin/trace/{request_id}")
    assert kept.status_code == 200
    assert kept.json()["response"]["status"] == 200
    assert stage(kept.json(), "cache")["decision"] == "HIT"


def test_waf_block_trace(traced: ProxyProcess, http: httpx.Client) -> None:
    response, trace = traced_get(http, traced, "/debug/echo", params={"q": "1' OR 1=1--"})
    assert response.status_code == 403
    waf = stage(trace, "waf")
    assert waf["decision"] == "block" and waf["status"] == 403
    assert waf["score"] >= waf["threshold"]
    ids = [m["id"] for m in waf["matched"]]
    assert "sqli-tautology" in ids
    found = waf["matched"][ids.index("sqli-tautology")]
    assert found["target"] == "arg:q" and "or 1=1" in found["excerpt"]
    assert [s["stage"] for s in trace["stages"]] == ["waf"]


def test_rate_limited_trace(traced: ProxyProcess, http: httpx.Client) -> None:
    path = f"/path-test/rl-burst/{unique()}"  # burst 10, one token a minute, per path
    assert [http.get(path).status_code for _ in range(10)] == [200] * 10
    response, trace = traced_get(http, traced, path)
    assert response.status_code == 429
    limit = stage(trace, "ratelimit")
    assert limit["decision"] == "deny" and limit["spent"] is False
    rule = next(r for r in limit["rules"] if r["id"] == "rl-burst")
    assert rule["allowed"] is False and rule["remaining"] == 0
    assert rule["bucket"] == f"rl-burst|127.0.0.1 {path}"
    assert 58 <= rule["retry_after_s"] <= 60


def test_stale_serve_trace(traced: ProxyProcess, http: httpx.Client) -> None:
    params = {"u": unique(), "cc": "max-age=1, stale-while-revalidate=30"}
    assert http.get(CUSTOM, params=params).headers["x-edge-cache"] == "STORE"
    time.sleep(2.2)  # past max-age=1, even with the origin's whole-second Date
    response, trace = traced_get(http, traced, CUSTOM, params=params)
    assert response.headers["x-edge-cache"] == "STALE"
    cache = stage(trace, "cache")
    assert cache["predicted"] == cache["decision"] == "STALE"
    stored = cache["stored"]
    assert stored["fresh"] is False and stored["ttl_s"] < 0
    assert stored["stale_while_revalidate_s"] == 30
    assert stored["directives"] == {"max-age": "1", "stale-while-revalidate": "30"}
    assert cache["refresh"] in ("starts in the background", "already in flight")


def test_trace_token_is_never_forwarded(
    traced: ProxyProcess, http: httpx.Client, client: httpx.Client
) -> None:
    response, trace = traced_get(http, traced, "/debug/echo")
    seen = {name.lower() for name, _ in response.json()["headers"]}
    assert TOKEN_HEADER.lower() not in seen
    assert traced.token not in response.text
    assert stage(trace, "upstream")["status"] == 200
    # the session stack has tracing off: the header is dropped all the same
    untraced = client.get("/debug/echo", headers={TOKEN_HEADER: "some-admin-token"})
    assert "x-edge-trace" not in untraced.headers
    assert "some-admin-token" not in untraced.text


def test_a_custom_trace_header_is_not_forwarded(proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory({"explain": {"trace_enabled": True, "trace_header": "X-Debug-Me"}})
    response = httpx.get(f"{proxy.url}/debug/echo", headers={"X-Debug-Me": proxy.token}, timeout=10)
    assert json.loads(response.headers["x-edge-trace"])["trigger"] == "token"
    assert proxy.token not in response.text


def test_non_admin_clients_get_no_trace(
    traced: ProxyProcess, http: httpx.Client, admin: httpx.Client
) -> None:
    attempts: list[dict[str, str]] = [
        {},
        {TOKEN_HEADER: "not-the-token"},
        {TOKEN_HEADER: traced.token[:-1]},
        {"X-Edge-Trace": "1"},
        {"Authorization": f"Bearer {traced.token}"},  # the admin header on the public port
    ]
    for headers in attempts:
        response = http.get("/debug/echo", headers=headers)
        assert response.status_code == 200
        assert "x-edge-trace" not in response.headers, headers
        request_id = response.headers["x-request-id"]
        assert admin.get(f"/admin/trace/{request_id}").status_code == 404
    assert httpx.get(f"{traced.admin_url}/admin/trace").status_code == 401
    wrong = httpx.get(f"{traced.admin_url}/admin/trace", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_not_in_debug_cidr_gets_no_trace(proxy_factory: ProxyFactory) -> None:
    outside = proxy_factory({"explain": {"trace_enabled": True, "trace_cidrs": ["10.0.0.0/8"]}})
    response = httpx.get(f"{outside.url}/debug/echo", timeout=10)
    panics = [r for r in outside.log_records() if r.get("event") == "panic"]
    assert response.status_code == 200, (response.headers, response.text, panics)
    assert "x-edge-trace" not in response.headers
    # odd inputs to the trace decision are "not traced", never a 500: a token header that is
    # not UTF-8, an empty one, a forwarded-for the proxy does not trust
    for headers in (
        {TOKEN_HEADER: b"\xff\xfe-not-utf8"},
        {TOKEN_HEADER: ""},
        {"X-Forwarded-For": "::ffff:10.0.0.1, garbage"},
    ):
        odd = httpx.get(f"{outside.url}/debug/echo", headers=headers, timeout=10)
        assert odd.status_code in (200, 400), (headers, odd.status_code, odd.text)
        assert "x-edge-trace" not in odd.headers
    assert not [r for r in outside.log_records() if r.get("event") == "panic"]


def test_refusals_by_limits_and_normalize_are_traced(
    traced: ProxyProcess, http: httpx.Client, admin: httpx.Client
) -> None:
    token = {TOKEN_HEADER: traced.token}
    cases = [
        ("/" + "u" * 20_000, {}, 414, "limits", "uri_too_long"),
        ("/debug/echo", {"X-Big": "b" * 40_000}, 431, "limits", "headers_too_large"),
        ("/a%00b", {}, 400, "normalize", "encoded_nul"),
    ]
    for path, headers, status, refused_by, reason in cases:
        response = httpx.get(f"{traced.url}{path}", headers={**token, **headers}, timeout=10)
        assert response.status_code == status, (path[:20], response.text)
        trace = json.loads(response.headers["x-edge-trace"])
        assert trace["trigger"] == "token"
        assert trace["stages"][-1]["stage"] == refused_by, trace
        assert trace["stages"][-1]["decision"] == "refuse"
        assert trace["stages"][-1]["reason"] == reason
        assert trace["response"]["status"] == status and trace["response"]["error"] == reason
        kept = admin.get(f"/admin/trace/{response.headers['x-request-id']}")
        assert kept.status_code == 200 and kept.json()["stages"][-1]["reason"] == reason
        # the same refusal for a client nobody traces: no trace, nothing kept
        untraced = httpx.get(f"{traced.url}{path}", headers=headers, timeout=10)
        assert untraced.status_code == status and "x-edge-trace" not in untraced.headers
        assert admin.get(f"/admin/trace/{untraced.headers['x-request-id']}").status_code == 404


def test_trace_token_guesses_lock_the_admin_listener(proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(
        {
            "explain": {"trace_enabled": True},
            "admin_api": {"auth_failure_limit": 2, "auth_failure_window_ms": 60_000},
        }
    )
    bearer = {"Authorization": f"Bearer {proxy.token}"}
    assert httpx.get(f"{proxy.admin_url}/admin/trace", headers=bearer).status_code == 200
    for _ in range(2):
        guess = httpx.get(f"{proxy.url}/debug/echo", headers={TOKEN_HEADER: "guess"}, timeout=10)
        assert guess.status_code == 200 and "x-edge-trace" not in guess.headers
    locked = httpx.get(f"{proxy.admin_url}/admin/trace", headers=bearer, timeout=10)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    right = httpx.get(f"{proxy.url}/debug/echo", headers={TOKEN_HEADER: proxy.token}, timeout=10)
    assert right.status_code == 200 and "x-edge-trace" not in right.headers  # locked out


def test_debug_cidr_traces_and_header_is_capped(proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(
        {
            "explain": {
                "trace_enabled": True,
                "trace_cidrs": ["127.0.0.0/8"],
                "trace_header_max_bytes": 256,
            }
        }
    )
    response = httpx.get(f"{proxy.url}/cache/custom", params={"u": unique()}, timeout=10)
    header = response.headers["x-edge-trace"]
    assert len(header.encode()) <= 256
    brief = json.loads(header)
    request_id = response.headers["x-request-id"]
    assert brief["truncated"] is True and brief["request_id"] == request_id
    assert brief["full"] == f"/admin/trace/{request_id}"
    full = httpx.get(
        f"{proxy.admin_url}{brief['full']}",
        headers={"Authorization": f"Bearer {proxy.token}"},
        timeout=10,
    ).json()
    assert full["trigger"] == "cidr"
    assert {"waf", "ratelimit", "route", "cache"} <= {s["stage"] for s in full["stages"]}


def test_ring_buffer_keeps_the_last_n(
    traced: ProxyProcess, http: httpx.Client, admin: httpx.Client
) -> None:
    ids = [
        traced_get(http, traced, "/debug/echo")[0].headers["x-request-id"] for _ in range(RING + 2)
    ]
    assert [admin.get(f"/admin/trace/{i}").status_code for i in ids] == [404] * 2 + [200] * RING
    listing = admin.get("/admin/trace").json()
    assert listing["capacity"] == RING and listing["kept"] == RING
    assert [t["request_id"] for t in listing["traces"]] == ids[::-1][:RING]


# --- Server-Timing ------------------------------------------------------------------------------


def test_server_timing_is_off_by_default(client: httpx.Client) -> None:
    response = client.get(CUSTOM, params={"u": unique()})
    assert response.status_code == 200
    assert "server-timing" not in response.headers
    assert "x-edge-trace" not in response.headers


def test_server_timing_on_an_enabled_route_only(stack: Stack, http: httpx.Client) -> None:
    response = http.get(CUSTOM, params={"u": unique(), "cc": "max-age=60"})
    timing = response.headers["server-timing"]
    entries = [part.strip().split(";") for part in timing.split(",")]
    assert [entry[0] for entry in entries] == ["waf", "ratelimit", "cache", "upstream"]
    assert "desc=pass" in entries[0] and "desc=allow" in entries[1]
    assert "desc=STORE" in entries[2]
    for entry in entries:
        assert entry[1].startswith("dur=") and float(entry[1][4:]) >= 0
    assert "127.0.0.1" not in timing and "sqli" not in timing  # no addresses, no rules
    assert "x-edge-trace" not in response.headers  # timing is not a trace
    hit = http.get(CUSTOM, params=dict(response.request.url.params))
    hit_timing = hit.headers["server-timing"]
    assert "cache;dur=" in hit_timing and "desc=HIT" in hit_timing
    assert "upstream" not in hit_timing
    assert "server-timing" not in http.get("/debug/echo").headers  # route `local`: off


# --- POST /admin/explain --------------------------------------------------------------------------


def test_explain_contacts_no_origin_and_stores_nothing(
    stack: Stack, traced: ProxyProcess, http: httpx.Client, admin: httpx.Client
) -> None:
    u = unique()
    url = f"{traced.url}{CUSTOM}?u={u}&cc=max-age%3D60"
    result = explain(admin, url)
    summary = result["summary"]
    assert summary["cache"]["decision"] == "MISS" and summary["cache"]["stored"] is False
    assert summary["response"] == {"source": "origin", "status": None}
    assert result["trace"]["dry_run"] is True
    assert stage(result["trace"], "upstream")["targets"] == [stack.origin_url]
    assert stack.hits(CUSTOM) == 0  # the origin saw nothing
    real = http.get(CUSTOM, params={"u": u, "cc": "max-age=60"})
    assert real.headers["x-edge-cache"] == "STORE"  # explain stored nothing before it
    result = explain(admin, url)
    cache = result["summary"]["cache"]
    assert cache["decision"] == "HIT" and cache["stored"] is True and cache["fresh"] is True
    assert cache["ttl_s"] > 50 and cache["age_s"] >= 0
    assert result["summary"]["response"] == {"source": "cache", "status": 200}
    assert stack.hits(CUSTOM) == 1
    hit = http.get(CUSTOM, params={"u": u, "cc": "max-age=60"})
    assert hit.headers["x-edge-cache"] == "HIT"


def test_explain_spends_no_tokens(
    traced: ProxyProcess, http: httpx.Client, admin: httpx.Client
) -> None:
    path = f"/path-test/rl-burst/{unique()}"
    assert [http.get(path).status_code for _ in range(9)] == [200] * 9
    for _ in range(3):  # one token left: each explanation sees it, none spends it
        result = explain(admin, f"{traced.url}{path}")
        limit = result["summary"]["ratelimit"]
        assert limit["would_allow"] is True and limit["rules"]["rl-burst"] == 0
        assert stage(result["trace"], "ratelimit")["spent"] is False
    assert http.get(path).status_code == 200  # the tenth, exactly at the limit
    assert http.get(path).status_code == 429
    denied = explain(admin, f"{traced.url}{path}")
    assert denied["summary"]["ratelimit"]["would_allow"] is False
    assert denied["summary"]["response"] == {"source": "ratelimit", "status": 429}
    assert "rate limit rl-burst" in denied["summary"]["would"]


def test_explain_waf_block_with_a_body(stack: Stack, admin: httpx.Client) -> None:
    body = '{"comment": "<script>alert(1)</script>"}'
    result = explain(
        admin,
        "/debug/echo",
        method="POST",
        headers=[["Host", "127.0.0.1"], ["Content-Type", "application/json"]],
        body=body,
    )
    summary = result["summary"]
    assert summary["waf"]["would_block"] is True and summary["waf"]["rules"]
    assert summary["response"] == {"source": "waf", "status": 403}
    waf = stage(result["trace"], "waf")
    assert waf["body_inspected_bytes"] == len(body)
    assert stack.hits("/debug/echo") == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (b"{}", "url"),
        (b'{"url": "ftp://x/"}', "http(s)://"),
        (b'{"url": "/x", "headers": {"Bad Name": "v"}}', "not a valid HTTP token"),
        (b'{"url": "/x", "client_ip": "999.1.1.1"}', "not an IP address"),
    ],
)
def test_explain_bad_input_is_a_400(admin: httpx.Client, body: bytes, message: str) -> None:
    response = admin.post(
        "/admin/explain", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert message in response.json()["message"]


def test_explain_needs_the_admin_token(traced: ProxyProcess) -> None:
    response = httpx.post(f"{traced.admin_url}/admin/explain", json={"url": "/"}, timeout=10)
    assert response.status_code == 401


# --- openflare explain --------------------------------------------------------------------------


def run_cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENFLARE_ADMIN_TOKEN", "NO_COLOR")}
    if token is not None:
        env["OPENFLARE_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "openflare", "explain", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_cli_explains_against_a_real_proxy(
    stack: Stack, traced: ProxyProcess, http: httpx.Client
) -> None:
    u = unique()
    http.get(CUSTOM, params={"u": u, "cc": "max-age=60"})
    done = run_cli(
        f"{traced.url}{CUSTOM}?u={u}&cc=max-age%3D60",
        "--admin",
        traced.admin_url,
        "-H",
        "Accept: application/json",
        token=traced.token,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\033[" not in out  # not a terminal: no colour
    assert "=> answer 200 from the cache (HIT" in out
    assert "stored 200, fresh: lifetime 60s (max-age)" in out
    assert "ratelimit  allow" in out and "no token spent" in out
    assert stack.hits(CUSTOM) == 1

    blocked = run_cli(
        "/debug/echo?q=1%27%20OR%201=1--", "--admin", traced.admin_url, "--token", traced.token
    )
    assert blocked.returncode == 0 and "refuse with 403: WAF rules" in blocked.stdout
    as_json = run_cli("/", "--admin", traced.admin_url, "--json", token=traced.token)
    assert json.loads(as_json.stdout)["trace"]["dry_run"] is True


def test_cli_errors_exit_non_zero(traced: ProxyProcess) -> None:
    unauthorized = run_cli("/", "--admin", traced.admin_url, "--token", "wrong")
    assert unauthorized.returncode == 1 and "401" in unauthorized.stderr
    missing = run_cli("/", "--admin", traced.admin_url)
    assert missing.returncode == 1 and "OPENFLARE_ADMIN_TOKEN" in missing.stderr
    bad_header = run_cli("/", "--admin", traced.admin_url, "-H", "nocolon", token=traced.token)
    assert bad_header.returncode == 2
    bad_url = run_cli("ftp://x/", "--admin", traced.admin_url, token=traced.token)
    assert bad_url.returncode == 1 and "400" in bad_url.stderr
