"""The admin dashboard on the admin app: its static files and headers, and the JSON endpoints
it polls (`/admin/stats/*`), against a real config bundle, runtime and config manager."""

from __future__ import annotations

import fnmatch
import io
import re
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from openflare.admin.routes import create_admin_app
from openflare.admin.stats_routes import REDACTED, STATS_SAMPLER, Sampler
from openflare.admin.ui_routes import CONTENT_SECURITY_POLICY
from openflare.config.loader import load_bundle
from openflare.config.reload import ConfigManager
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.observability.recent import RecentEvents
from openflare.pipeline.base import Exchange
from openflare.runtime import RuntimeHolder, build_runtime

UI_DIR = Path(__file__).resolve().parents[2] / "src" / "openflare" / "admin" / "ui"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
TOKEN = "k" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRETS = ("s3cret-upstream", "hunter2-cache", "rl-redis-pass", "collector-secret")

PROXY_YAML = """\
upstreams:
  - name: origin
    base_url: http://edge:s3cret-upstream@127.0.0.1:9
  - name: spare
    base_url: http://127.0.0.1:10
routing:
  default_upstream: origin
cache:
  redis_url: "redis://:hunter2-cache@redis.internal:6379/0"
tracing:
  headers:
    Authorization: "Bearer collector-secret"
rule_files:
  waf: waf.yaml
  rate_limit: rl.yaml
"""
WAF_YAML = """\
rules:
  - id: sqli-test
    description: "UNION SELECT in arguments"
    tags: [sqli]
    match: {any: [{target: args, transforms: [lowercase], contains: "union select"}]}
    action: {type: block}
  - id: noted
    mode: shadow
    match: {any: [{target: path, prefix: /noted}]}
    action: {type: block}
"""
RL_YAML = """\
backend:
  type: local
  redis: {url: "redis://default:rl-redis-pass@r:6379/0"}
rules:
  - id: global
    rate: 1000
    burst: 1000
  - id: login
    path_prefix: /login
    rate: 1
    burst: 1
    mode: shadow
"""


@dataclass
class Admin:
    client: TestClient[web.Request, web.Application]
    deps: Deps
    sampler: Sampler
    folder: Path
    clock: list[float]

    def tick(self, seconds: float) -> None:
        self.clock[0] += seconds
        self.sampler.tick()


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    (tmp_path / "proxy.yaml").write_text(PROXY_YAML)
    (tmp_path / "waf.yaml").write_text(WAF_YAML)
    (tmp_path / "rl.yaml").write_text(RL_YAML)
    env = {"OPENFLARE_ADMIN_TOKEN": TOKEN}
    bundle = load_bundle(tmp_path / "proxy.yaml", env)
    deps = Deps(log=LogWriter(io.BytesIO()))
    holder = RuntimeHolder(build_runtime(bundle, deps))
    manager = ConfigManager(str(tmp_path / "proxy.yaml"), env, deps, holder)
    app = create_admin_app(holder, deps, manager)
    sampler = app[STATS_SAMPLER]
    clock = [5000.0]
    sampler.clock = lambda: clock[0]
    sampler.wall = lambda: clock[0]
    client = TestClient(TestServer(app))
    await client.start_server()
    sampler.ring.clear()  # forget the background task's first sample: the test drives time
    try:
        yield Admin(client, deps, sampler, tmp_path, clock)
    finally:
        await client.close()
        await deps.close()
        deps.log.close()


# --------------------------------------------------------------------------------------------
# the page and its files


async def test_index_is_served_with_strict_headers(admin: Admin) -> None:
    response = await admin.client.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "Set-Cookie" not in response.headers
    body = await response.text()
    assert '<script src="/ui/app.js" defer></script>' in body
    assert '<link rel="stylesheet" href="/ui/style.css">' in body


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
        ("/ui/index.html", "text/html; charset=utf-8"),
    ],
)
async def test_static_files(admin: Admin, path: str, content_type: str) -> None:
    response = await admin.client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert (await response.read()) == (UI_DIR / path.rsplit("/", 1)[1]).read_bytes()
    etag = response.headers["ETag"]
    again = await admin.client.get(path, headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    assert (await again.read()) == b""
    head = await admin.client.head(path)
    assert head.status == 200


@pytest.mark.parametrize(
    "path", ["/ui/nope.js", "/ui/..%2Froutes.py", "/ui/", "/ui/%2e%2e/routes.py", "/index.html"]
)
async def test_nothing_else_is_served(admin: Admin, path: str) -> None:
    response = await admin.client.get(path)
    assert response.status == 404


async def test_page_needs_no_token_but_data_does(admin: Admin) -> None:
    assert (await admin.client.get("/")).status == 200
    for path in ("/admin/stats/overview", "/admin/stats/security", "/admin/stats/config"):
        anonymous = await admin.client.get(path)
        assert anonymous.status == 401
        wrong = await admin.client.get(path, headers={"Authorization": "Bearer " + "x" * 32})
        assert wrong.status == 401
        assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await admin.client.get(path, headers=AUTH)).status == 200


async def test_page_still_served_with_the_admin_api_off(tmp_path: Path) -> None:
    """The page says so at sign-in: the API answers 404 admin_api_disabled."""
    (tmp_path / "proxy.yaml").write_text(
        "upstreams: [{name: o, base_url: 'http://127.0.0.1:9'}]\nadmin_api: {enabled: false}\n"
    )
    bundle = load_bundle(tmp_path / "proxy.yaml", {})
    deps = Deps(log=LogWriter(io.BytesIO()))
    holder = RuntimeHolder(build_runtime(bundle, deps))
    app = create_admin_app(holder, deps, ConfigManager(bundle.main_path, {}, deps, holder))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/")).status == 200
        refused = await client.get("/admin/stats/overview", headers=AUTH)
        assert refused.status == 404
        assert (await refused.json())["error"] == "admin_api_disabled"
    await deps.close()
    deps.log.close()


class InlineFinder(HTMLParser):
    """Collects everything a strict CSP would refuse or that loads from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self.in_script = True
            if not (names.get("src") or "").startswith("/ui/"):
                self.problems.append("script without a /ui/ src")
        for name in ("src", "href"):
            value = names.get(name) or ""
            if value and not value.startswith(("/ui/", "#")):
                self.problems.append(f"<{tag} {name}={value!r}> loads from elsewhere")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.problems.append("inline script")


def test_no_inline_code_and_nothing_from_elsewhere() -> None:
    finder = InlineFinder()
    finder.feed((UI_DIR / "index.html").read_text())
    assert finder.problems == []
    script = (UI_DIR / "app.js").read_text()
    for forbidden in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
        "document.cookie",
        ".style.",
    ):
        assert forbidden not in script, forbidden
    # only the SVG namespace and placeholders name another origin; nothing is fetched from one
    others = set(re.findall(r"https?://[^\s\"'`/]+", script)) - {"http://www.w3.org"}
    assert others <= {"http://example.com"}, others
    assert re.findall(r"fetch\(", script) == ["fetch("]  # one place talks to the network
    css = (UI_DIR / "style.css").read_text()
    assert "@import" not in css and "url(" not in css


def test_ui_files_ship_in_the_package() -> None:
    """A wheel without them would fail at start-up (create_admin_app reads them)."""
    data = tomllib.loads(PYPROJECT.read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["openflare"]
    for file in UI_DIR.iterdir():
        relative = f"admin/ui/{file.name}"
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


# --------------------------------------------------------------------------------------------
# GET /admin/stats/overview


async def get_json(admin: Admin, path: str) -> Any:
    response = await admin.client.get(path, headers=AUTH)
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("application/json")
    return await response.json()


async def test_overview_numbers_cover_the_window(admin: Admin) -> None:
    metrics = admin.deps.metrics
    metrics.request_child("api", "GET", 200).inc(5)  # before the window: only in totals
    admin.tick(0)
    ok = metrics.request_child("api", "GET", 200)
    failed = metrics.request_child("api", "POST", 502)
    latency = metrics.route_children("api")[0]
    admin.tick(2)
    ok.inc(30)
    failed.inc(10)
    for _ in range(40):
        latency.observe(0.004)
    metrics.route_children("api")[1].inc(4000)
    metrics.waf_decision("sqli-test", "block")
    metrics.ratelimit_decision("global", "deny")
    metrics.in_flight_now = 3
    admin.tick(8)
    data = await get_json(admin, "/admin/stats/overview?window=10")
    assert data["window_s"] == 10.0
    assert data["requests"] == {"total": 45.0, "window": 40.0, "per_second": 4.0}
    assert data["status"]["window"] == {"1xx": 0, "2xx": 30, "3xx": 0, "4xx": 0, "5xx": 10}
    assert data["status"]["total"]["2xx"] == 35
    assert data["status"]["codes_window"] == {"200": 30, "502": 10}
    assert data["status"]["error_ratio"] == 0.25
    assert 2.5 < data["latency_ms"]["p50"] <= 5 and 2.5 < data["latency_ms"]["p99"] <= 5
    assert data["in_flight"] == 3
    assert data["bytes_sent"] == {"total": 4000.0, "per_second": 400.0}
    assert data["waf_rule_blocks"] == {"total": 1.0, "window": 1.0}
    assert data["ratelimit_rule_denials"] == {"total": 1.0, "window": 1.0}
    assert data["config"]["hash"] and data["version"]
    points = data["series"]["points"]
    assert data["series"]["interval_s"] == 2.0
    assert [p["rps"] for p in points] == [0.0, 5.0]
    assert points[-1]["error_ratio"] == 0.25


async def test_overview_without_traffic_has_no_percentiles(admin: Admin) -> None:
    admin.tick(0)
    admin.tick(2)
    data = await get_json(admin, "/admin/stats/overview")
    assert data["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert data["requests"]["per_second"] == 0.0
    assert data["status"]["error_ratio"] is None
    assert data["cache"] == {"hit_ratio": None, "hit_ratio_window": None}


async def test_overview_upstreams_health_and_redacted_urls(admin: Admin) -> None:
    metrics = admin.deps.metrics
    admin.tick(0)
    metrics.upstream_latency("origin").observe(0.01)
    metrics.upstream_error("origin", "timeout")
    metrics.upstream_error("spare", "connect")
    metrics.upstream_error("spare", "connect")
    admin.tick(2)
    data = await get_json(admin, "/admin/stats/overview")
    rows = {row["name"]: row for row in data["upstreams"]}
    origin, spare = rows["origin"], rows["spare"]
    assert origin["base_url"] == f"http://edge:{REDACTED}@127.0.0.1:9"
    assert origin["health"] == "degraded"
    assert origin["answered"] == 1 and origin["errors"] == {"timeout": 1}
    assert origin["latency_ms"]["p95"] is not None
    assert spare["health"] == "failing" and spare["errors"] == {"connect": 2}
    assert set(origin["connections"]) == {"in_use", "idle", "limit"}
    admin.tick(20)  # errors fall out of the window: idle, totals kept
    rows = {
        row["name"]: row for row in (await get_json(admin, "/admin/stats/overview"))["upstreams"]
    }
    assert rows["spare"]["health"] == "idle" and rows["spare"]["errors"] == {}
    assert rows["spare"]["errors_total"] == {"connect": 2}


@pytest.mark.parametrize("window", ["0", "-1", "nan", "inf", "301", "ten"])
async def test_bad_window_is_a_400(admin: Admin, window: str) -> None:
    for path in ("/admin/stats/overview", "/admin/stats/security"):
        response = await admin.client.get(f"{path}?window={window}", headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"] == "bad_request"


async def test_sampler_runs_in_the_background(tmp_path: Path) -> None:
    (tmp_path / "proxy.yaml").write_text(
        "dev_mode: true\nupstreams: [{name: o, base_url: 'http://127.0.0.1:9'}]\n"
    )
    bundle = load_bundle(tmp_path / "proxy.yaml", {})
    deps = Deps(log=LogWriter(io.BytesIO()))
    holder = RuntimeHolder(build_runtime(bundle, deps))
    app = create_admin_app(holder, deps, ConfigManager(bundle.main_path, {}, deps, holder))
    async with TestClient(TestServer(app)) as client:
        assert len(app[STATS_SAMPLER].ring) == 1  # sampled at start-up
        assert (await client.get("/")).status == 200
    await deps.close()
    deps.log.close()


# --------------------------------------------------------------------------------------------
# GET /admin/stats/security


async def test_security_decisions_by_rule_and_mode(admin: Admin) -> None:
    metrics = admin.deps.metrics
    metrics.waf_decision("sqli-test", "block")
    admin.tick(0)
    metrics.waf_decision("sqli-test", "block")
    metrics.waf_decision("noted", "would_block")
    metrics.ratelimit_decision("global", "allow")
    metrics.ratelimit_decision("login", "would_block")
    admin.tick(2)
    data = await get_json(admin, "/admin/stats/security")
    waf = data["waf"]
    assert (waf["enabled"], waf["mode"], waf["rules"]) == (True, "enforce", 2)
    rows = {row["rule_id"]: row for row in waf["decisions"]}
    assert rows["sqli-test"] == {
        "rule_id": "sqli-test",
        "mode": "enforce",
        "description": "UNION SELECT in arguments",
        "tags": ["sqli"],
        "total": {"block": 2.0},
        "window": {"block": 1.0},
    }
    assert rows["noted"]["mode"] == "shadow"
    limits = {row["rule_id"]: row for row in data["ratelimit"]["decisions"]}
    assert limits["global"]["mode"] == "enforce" and limits["global"]["total"] == {"allow": 1}
    assert limits["login"]["mode"] == "shadow"
    assert data["ratelimit"]["backend"] == "local"


async def test_security_without_a_recent_ring(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build whose access-log stage keeps no ring still answers, saying so."""
    monkeypatch.setattr(admin.deps.metrics, "recent_events", None, raising=False)
    data = await get_json(admin, "/admin/stats/security")
    assert data["recent"] == {"available": False, "capacity": 0, "recorded": 0, "events": []}


async def test_security_recent_refusals(admin: Admin) -> None:
    ring = RecentEvents(10)
    admin.deps.metrics.recent_events = ring  # type: ignore[attr-defined]
    exchange = Exchange(make_mocked_request("GET", "/search?q=x"), 0.0, False)
    exchange.request_id = "6f1c"
    exchange.path = "/search"
    exchange.waf = "block:sqli-test"
    ring.note(exchange, 403)
    data = await get_json(admin, "/admin/stats/security")
    assert data["recent"]["available"] is True
    (event,) = data["recent"]["events"]
    assert event["request_id"] == "6f1c" and event["rule_ids"] == ["sqli-test"]
    assert event["status"] == 403 and event["kind"] == "waf"


# --------------------------------------------------------------------------------------------
# GET /admin/stats/config


async def test_config_view_redacts_every_secret(admin: Admin) -> None:
    response = await admin.client.get("/admin/stats/config", headers=AUTH)
    text = await response.text()
    for secret in (*SECRETS, TOKEN):
        assert secret not in text
    data = await response.json()
    effective = data["effective"]
    assert effective["proxy"]["cache"]["redis_url"] == (
        f"redis://:{REDACTED}@redis.internal:6379/0"
    )
    assert effective["proxy"]["tracing"]["headers"] == {"Authorization": REDACTED}
    assert effective["rate_limits"]["backend"]["redis"]["url"] == (
        f"redis://default:{REDACTED}@r:6379/0"
    )
    assert effective["admin_token_set"] is True
    assert effective["waf"]["rules"][0]["id"] == "sqli-test"
    assert "match" not in effective["waf"]["rules"][0]  # patterns are summarised away
    assert sorted(data["redacted"]) == [
        "proxy.cache.redis_url",
        "proxy.tracing.headers.Authorization",
        "proxy.upstreams[0].base_url",
        "proxy.upstreams[0].targets[0]",  # base_url is also the first target
        "rate_limits.backend.redis.url",
    ]
    assert data["hash"] and data["loaded_at"] and data["version"]
    assert data["last_error"] is None and data["history"] == []
    assert "waf" in data["stages"]


async def test_config_token_in_the_file_is_redacted(admin: Admin) -> None:
    (admin.folder / "proxy.yaml").write_text(
        PROXY_YAML + "admin_api:\n  auth_token: in-file-token-0123456789abcdef\n"
    )
    reload = await admin.client.post("/admin/config/reload", headers=AUTH)
    assert (await reload.json())["result"] == "ok"
    text = await (await admin.client.get("/admin/stats/config", headers=AUTH)).text()
    assert "in-file-token-0123456789abcdef" not in text
    assert '"auth_token":"<redacted>"' in text


async def test_config_history_newest_first_and_last_error(admin: Admin) -> None:
    assert (await admin.client.post("/admin/config/reload", headers=AUTH)).status == 200
    (admin.folder / "waf.yaml").write_text("rules: [{id: broken}]\n")
    failed = await admin.client.post("/admin/config/reload", headers=AUTH)
    assert failed.status == 422
    data = await get_json(admin, "/admin/stats/config")
    assert [item["result"] for item in data["history"]] == ["error", "unchanged"]
    assert data["last_error"]["result"] == "error"
    assert any("waf.yaml" in error for error in data["last_error"]["errors"])
