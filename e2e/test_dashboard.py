"""The admin dashboard in a real browser (Debian's chromium, headless, via Playwright).

Against the session's stack: sign in with the admin token, watch the overview's numbers move
after traffic, purge a URL from the cache page and see the next request miss, see a WAF block
appear on the security page with its request id, reload from the configuration page, explain
a cached URL and a WAF block on the explain page; a wrong token is refused. Screenshots of
every page are saved in pytest's tmp dir (the path is printed with `-rA`/`-s`);
`OPENFLARE_UPDATE_DASHBOARD_SCREENSHOT=1` also rewrites docs/images/admin-dashboard.png
(never otherwise, so a test run leaves the tree clean).

Waits are generous (15 s) because the machines running the suite may be busy; nothing here
asserts on how fast anything happens.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx
import pytest

from dashboard_browser import CHROMIUM, Dashboard, launch, number, wait_until
from harness import REPO_ROOT, Stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# `make test` installs both; a missing one is a failure, never a silent skip
try:
    from playwright import sync_api
except ImportError as missing:  # pragma: no cover - an install problem, reported loudly
    raise ImportError("playwright is not installed (requirements-dev.txt)") from missing
if not Path(CHROMIUM).exists():  # pragma: no cover
    raise RuntimeError(f"no browser at {CHROMIUM} (Debian package chromium, apt-packages.txt)")

DOCS_SCREENSHOT = REPO_ROOT / "docs" / "images" / "admin-dashboard.png"
UPDATE_DOCS_SCREENSHOT = os.environ.get("OPENFLARE_UPDATE_DASHBOARD_SCREENSHOT") == "1"
SQLI = "' UNION SELECT password FROM users--"


def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"dashboard screenshots: {folder}")
    return folder


@pytest.fixture
def dashboard(browser: Browser, stack: Stack) -> Iterator[Dashboard]:
    tab = Dashboard(browser, stack.admin_url).open()
    try:
        yield tab
        # the strict CSP refused nothing and no script failed (a refused token or the explain
        # probe's 404 are logged by chromium as "Failed to load resource": expected)
        problems = [e for e in tab.errors if "Failed to load resource" not in e]
        assert problems == []
    finally:
        tab.close()


def signed_in(dashboard: Dashboard, stack: Stack) -> Dashboard:
    dashboard.sign_in_ok(stack.admin_token)
    return dashboard


# --------------------------------------------------------------------------------------------
# sign in


def test_wrong_token_is_refused(dashboard: Dashboard, stack: Stack, screenshots: Path) -> None:
    wrong = "not-the-token-" + unique()
    dashboard.sign_in(wrong)
    message = dashboard.wait_text(
        "#login-error", lambda t: "Wrong token" in t, "no error shown for a wrong token"
    )
    assert "401" in message
    assert not dashboard.visible("#nav")
    assert not dashboard.visible("#page-overview")
    assert dashboard.session_token() is None
    assert wrong not in dashboard.page.url
    dashboard.screenshot(screenshots / "login-refused.png")


def test_token_lives_in_session_storage_only(dashboard: Dashboard, stack: Stack) -> None:
    signed_in(dashboard, stack)
    assert dashboard.session_token() == stack.admin_token
    assert dashboard.cookies() == ""
    assert stack.admin_token not in dashboard.page.url
    assert dashboard.context.cookies() == []
    dashboard.page.reload()  # same tab: still signed in
    dashboard.page.wait_for_selector("#page-overview", state="visible")
    dashboard.page.click("#logout")
    dashboard.page.wait_for_selector("#login-form", state="visible")
    assert dashboard.session_token() is None


# --------------------------------------------------------------------------------------------
# overview


def send_traffic(stack: Stack, count: int) -> None:
    with stack.client() as client:
        for _ in range(count):
            response = client.get("/cache/custom", params={"cc": "no-store", "u": unique()})
            assert response.status_code == 200


def test_overview_numbers_move_with_traffic(
    dashboard: Dashboard, stack: Stack, screenshots: Path
) -> None:
    signed_in(dashboard, stack)
    before = number(
        dashboard.wait_text("#ov-total", lambda t: "since start" in t, "no request total shown")
    )
    assert before is not None
    send_traffic(stack, 30)
    dashboard.wait_number("#ov-total", before + 30, "the request total did not move")
    rate = wait_until(
        lambda: (lambda v: v if v and v > 0 else None)(number(dashboard.text("#ov-rps"))),
        "requests/s stayed at 0 after traffic",
    )
    assert rate > 0
    dashboard.wait_number(
        '#status-mix-legend li[data-class="2xx"]', 1, "the status mix shows no 2xx"
    )
    wait_until(
        lambda: dashboard.page.locator("#chart-rps path.line").count() > 0,
        "the requests/s chart has no line",
    )
    for tile in ("#ov-p50", "#ov-p95", "#ov-p99"):
        dashboard.wait_text(tile, lambda t: number(t) is not None, f"{tile} shows no latency")
    dashboard.wait_text(
        '#upstreams tr[data-upstream="origin"]', lambda t: "origin" in t, "no origin row"
    )
    dashboard.screenshot(screenshots / "overview.png")
    if UPDATE_DOCS_SCREENSHOT:
        docs_screenshot(dashboard, stack)


def docs_screenshot(dashboard: Dashboard, stack: Stack) -> None:
    """docs/images/admin-dashboard.png: the overview during half a minute of mixed traffic
    (cache hits, misses, a WAF block and a 404 now and then, a rate that rises and falls)."""
    stop = threading.Event()

    def traffic() -> None:
        with stack.client() as client:
            step = 0
            while not stop.is_set():
                step += 1
                client.get("/cache/custom", params={"cc": "max-age=60", "u": str(step % 9)})
                client.get("/cache/custom", params={"cc": "no-store", "u": unique()})
                if step % 40 == 0:
                    client.get("/search", params={"q": SQLI})
                    client.get("/missing-" + unique())
                stop.wait(0.01 + 0.04 * abs(math.sin(step / 150)))

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        dashboard.page.wait_for_timeout(40_000)
        dashboard.page.set_viewport_size({"width": 1280, "height": 700})
        dashboard.screenshot(DOCS_SCREENSHOT, full_page=False)
    finally:
        stop.set()
        worker.join(timeout=15)


# --------------------------------------------------------------------------------------------
# cache


def edge_cache(client: httpx.Client, target: str) -> str:
    response = client.get(target)
    assert response.status_code == 200
    return response.headers["x-edge-cache"]


def test_purge_url_then_next_request_misses(
    dashboard: Dashboard, stack: Stack, screenshots: Path
) -> None:
    target = f"/cache/custom?cc=max-age%3D60&u={unique()}"
    url = f"http://{stack.host_header}{target}"
    with stack.client() as client:
        edge_cache(client, target)
        assert edge_cache(client, target) == "HIT"
        signed_in(dashboard, stack)
        dashboard.go("cache")
        dashboard.wait_text("#cache-entries", lambda t: number(t) is not None, "no cache stats")
        dashboard.page.select_option("#purge-mode", "url")
        dashboard.page.fill("#purge-value", url)

        dashboard.page.click("#purge-submit")  # asks first; cancelling purges nothing
        dashboard.page.wait_for_selector("#purge-confirm", state="visible")
        assert url in dashboard.text("#purge-confirm-text")
        dashboard.page.click("#purge-confirm-no")
        dashboard.page.wait_for_selector("#purge-confirm", state="hidden")
        assert edge_cache(client, target) == "HIT"

        dashboard.page.click("#purge-submit")
        dashboard.page.wait_for_selector("#purge-confirm", state="visible")
        dashboard.screenshot(screenshots / "cache-confirm.png")
        dashboard.page.click("#purge-confirm-yes")
        result = dashboard.wait_text(
            "#purge-result", lambda t: t.startswith("Purged"), "no purge result shown"
        )
        assert result == "Purged 1 entry."
        assert edge_cache(client, target) in ("MISS", "STORE")  # fetched from the origin again
    dashboard.screenshot(screenshots / "cache.png")


def test_purge_refusal_is_shown(dashboard: Dashboard, stack: Stack) -> None:
    signed_in(dashboard, stack)
    dashboard.go("cache")
    dashboard.page.select_option("#purge-mode", "prefix")
    dashboard.page.click("#purge-submit")  # nothing typed: asked to type it, nothing sent
    dashboard.wait_text("#purge-result", lambda t: "Enter the prefix" in t, "no hint shown")
    assert not dashboard.visible("#purge-confirm")


# --------------------------------------------------------------------------------------------
# security


def test_waf_block_appears_with_its_request_id(
    dashboard: Dashboard, stack: Stack, screenshots: Path
) -> None:
    with stack.client() as client:
        blocked = client.get("/search", params={"q": SQLI}, headers={"Accept": "application/json"})
    assert blocked.status_code == 403
    request_id = blocked.json()["request_id"]
    rule_ids = blocked.json()["rule_ids"]
    assert request_id and rule_ids
    signed_in(dashboard, stack)
    dashboard.go("security")
    row = f'#recent tr[data-request-id="{request_id}"]'
    text = dashboard.wait_text(row, lambda t: request_id in t, "the block is not listed")
    assert rule_ids[0] in text and "403" in text and "block" in text
    assert SQLI not in text and "UNION" not in text  # the query is never shown
    decisions = dashboard.wait_text(
        f'#waf-decisions tr[data-rule="{rule_ids[0]}"]',
        lambda t: "block" in t,
        "the rule's block is not counted",
    )
    assert rule_ids[0] in decisions
    dashboard.wait_number("#sec-waf-blocks-total", 1, "no WAF block counted")
    dashboard.screenshot(screenshots / "security.png")


# --------------------------------------------------------------------------------------------
# configuration


def test_config_page_shows_the_loaded_config_and_reloads(
    dashboard: Dashboard, stack: Stack, screenshots: Path
) -> None:
    loaded = httpx.get(stack.admin_url + "/readyz", timeout=10).json()["config_hash"]
    signed_in(dashboard, stack)
    dashboard.go("config")
    dashboard.wait_text("#cfg-hash", lambda t: t == loaded, "the loaded hash is not shown")
    effective = dashboard.wait_text("#cfg-effective", lambda t: '"upstreams"' in t, "no config")
    assert stack.admin_token not in effective
    dashboard.page.click("#reload-button")
    result = dashboard.wait_text(
        "#reload-result", lambda t: t.startswith(("Unchanged", "Reloaded")), "no reload result"
    )
    assert result.startswith("Unchanged")  # the files on disk are the ones loaded
    dashboard.wait_text(
        "#reload-history tbody", lambda t: "admin_api" in t, "the reload is not in the history"
    )
    dashboard.screenshot(screenshots / "config.png")


def test_explain_shows_only_when_the_endpoint_exists(dashboard: Dashboard, stack: Stack) -> None:
    with stack.admin() as admin:
        exists = admin.post("/admin/explain", json={}).status_code != 404
    signed_in(dashboard, stack)
    wait_until(
        lambda: dashboard.page.locator("#nav-explain").is_visible() == exists or None,
        f"the explain page should be {'shown' if exists else 'hidden'}",
    )
    dashboard.page.goto(stack.admin_url + "/#/explain")
    dashboard.page.wait_for_selector("#page-explain" if exists else "#page-overview")
    assert dashboard.visible("#page-explain") == exists


def test_explain_tab_explains_a_cached_url_and_a_waf_block(
    dashboard: Dashboard, stack: Stack, screenshots: Path
) -> None:
    u = unique()
    url = f"{stack.proxy_url}/cache/custom?u={u}&cc=max-age%3D60"
    with stack.client() as client:
        stored = client.get("/cache/custom", params={"u": u, "cc": "max-age=60"})
        assert stored.headers["x-edge-cache"] == "STORE"
    hits_before = stack.hits("/cache/custom")
    signed_in(dashboard, stack)
    dashboard.go("explain")
    page = dashboard.page
    page.select_option("#explain-method", "GET")
    page.fill("#explain-url", url)
    page.fill("#explain-headers", f"Host: {stack.host_header}\nAccept: application/json")
    page.click("#explain-submit")
    would = dashboard.wait_text(
        "#explain-would", lambda t: "from the cache" in t, "no cache answer was explained"
    )
    assert would.startswith("Would answer 200 from the cache (HIT")
    assert dashboard.text("#explain-route") == "local → origin"
    assert u in dashboard.text("#explain-key")
    cache_row = dashboard.text('#explain-stages tr[data-stage="cache"]')
    assert "HIT" in cache_row and "fresh: lifetime 60s (max-age)" in cache_row
    assert "no token spent" in dashboard.text('#explain-stages tr[data-stage="ratelimit"]')
    dashboard.screenshot(screenshots / "explain-hit.png")
    assert stack.hits("/cache/custom") == hits_before  # explaining reached no origin

    page.fill("#explain-url", f"{stack.proxy_url}/debug/echo?q={quote(SQLI, safe='')}")
    page.click("#explain-submit")
    dashboard.wait_text("#explain-would", lambda t: "refuse with 403" in t, "no WAF refusal")
    waf_row = dashboard.text('#explain-stages tr[data-stage="waf"]')
    assert "block" in waf_row and "arg:q" in waf_row
    assert dashboard.visible("#explain-stages") and not dashboard.visible("#explain-error")
    dashboard.screenshot(screenshots / "explain-block.png")


# --------------------------------------------------------------------------------------------
# served as a strict, self-contained page


def test_page_headers(stack: Stack) -> None:
    response = httpx.get(stack.admin_url + "/", timeout=10)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers
    with stack.admin(token=None) as anonymous:
        assert anonymous.get("/admin/stats/overview").status_code == 401
