"""Dashboard tests in a real browser: Python playwright driving Debian's chromium (never ``playwright install``).

The fixtures ``browser`` (one chromium per test module) and ``pages`` (signed-in pages, checked for JavaScript
errors and CSP violations at the end of the test) live in ``tests/e2e/conftest.py``. Screenshots go into
docs/screenshots/ when MAESTRO_UPDATE_SCREENSHOTS=1, else into a temporary folder, so an ordinary test run
leaves the working tree clean.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("MAESTRO_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "agentmaestro-screenshots"
)
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 20_000

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
)


class Pages:
    """Opens signed-in pages, each in its own browser context (its own sessionStorage), and checks
    that no page logged a JavaScript error or a CSP violation."""

    def __init__(self, browser: Any, url: str) -> None:
        self.browser = browser
        self.url = url
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.failed: list[str] = []
        """Responses with a 4xx/5xx status the pages received (some are expected: a not-found page)."""

    def open(self, key: str, route: str = "#/runs") -> Any:
        context = self.browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: self.errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
        )
        page.on(  # names the requests behind a console "Failed to load resource" error (for failure messages)
            "response",
            lambda r: self.failed.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None,
        )
        page.goto(self.url + "/")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.locator("#nav").wait_for(state="visible")
        if route != "#/runs":
            go(page, route)
        return page

    def sign_in_screenshot(self) -> None:
        context = self.browser.new_context(viewport=VIEWPORT)
        self.contexts.append(context)
        page = context.new_page()
        page.goto(self.url + "/")
        page.get_by_label("API key").wait_for()
        shot(page, "sign-in")

    def close(self) -> None:
        for c in self.contexts:
            c.close()


def go(page: Any, route: str) -> None:
    """Navigate inside the app (a hash change: no reload)."""
    page.evaluate("route => { location.hash = route; }", route)
    page.wait_for_function("route => location.hash === route", arg=route)


def shot(page: Any, name: str) -> None:
    """Save a screenshot of ``page`` as ``<SHOTS>/<name>.png`` (toasts cleared, layout settled)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.getElementById('toasts').replaceChildren()")
    page.wait_for_timeout(150)  # let charts and layout settle
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def expect() -> Any:
    """playwright's ``expect`` with this suite's timeout."""
    from playwright.sync_api import expect as _expect

    _expect.set_options(timeout=TIMEOUT_MS)
    return _expect
