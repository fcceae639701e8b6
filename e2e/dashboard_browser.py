"""A real browser for the admin-dashboard tests (test_dashboard.py): Debian's chromium, driven
headless by Playwright with `executable_path` — nothing here ever downloads a browser.

`Dashboard` is a small page object over one browser tab on the admin listener: sign in, open
a page, read a value, wait (generously: the machines running the suite may be busy) for the
live numbers to reach a value, and take screenshots. Every console error and uncaught page
error is collected, so a test can assert the strict CSP refused nothing and no script broke.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, ViewportSize

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_S = 15.0  # the longest any expectation waits for the page (never an assertion on speed)
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
PAGES = ("overview", "cache", "security", "config")

T = TypeVar("T")


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_until(
    probe: Callable[[], T | None], message: str, timeout: float = WAIT_S, interval: float = 0.25
) -> T:
    """Call `probe` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (waited {timeout:g} s; last: {last!r})")
        time.sleep(interval)


def number(text: str | None) -> float | None:
    """`"1,234 since start"` → 1234.0; `"4.50"` → 4.5; `"–"` → None."""
    if not text:
        return None
    match = re.search(r"-?\d[\d,]*(?:\.\d+)?", text)
    return float(match.group(0).replace(",", "")) if match else None


class Dashboard:
    """One tab on the admin listener's dashboard."""

    def __init__(self, browser: Browser, admin_url: str) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(WAIT_S * 1000)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def close(self) -> None:
        self.context.close()

    # ---- navigation

    def open(self) -> Dashboard:
        self.page.goto(self.admin_url + "/")
        self.page.wait_for_selector("#login-form, #nav", state="attached")
        return self

    def sign_in(self, token: str) -> None:
        self.page.fill("#token", token)
        self.page.click("#login-submit")

    def sign_in_ok(self, token: str) -> None:
        self.sign_in(token)
        self.page.wait_for_selector("#nav", state="visible")
        self.page.wait_for_selector("#page-overview", state="visible")

    def go(self, name: str) -> None:
        self.page.click(f'#nav a[data-page="{name}"]')
        self.page.wait_for_selector(f"#page-{name}", state="visible")

    # ---- reading

    def text(self, selector: str) -> str:
        """The text of the first match now ("" when there is none): never waits, since the
        pages replace their tables on every poll."""
        value = self.page.evaluate(
            "s => { const n = document.querySelector(s); return n ? n.textContent : '' }",
            selector,
        )
        return str(value or "").strip()

    def visible(self, selector: str) -> bool:
        return self.page.is_visible(selector)

    def wait_text(self, selector: str, check: Callable[[str], bool], message: str) -> str:
        """The text of `selector` once `check` accepts it (the page polls every few seconds)."""
        return wait_until(lambda: (lambda t: t if check(t) else None)(self.text(selector)), message)

    def wait_number(self, selector: str, at_least: float, message: str) -> float:
        def probe() -> float | None:
            value = number(self.text(selector))
            return value if value is not None and value >= at_least else None

        return wait_until(probe, f"{message}: {selector} never reached {at_least}")

    def session_token(self) -> str | None:
        value = self.page.evaluate("() => sessionStorage.getItem('openflare.admin.token')")
        return value if isinstance(value, str) else None

    def cookies(self) -> str:
        return str(self.page.evaluate("() => document.cookie"))

    # ---- artefacts

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path
