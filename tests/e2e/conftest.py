"""Browser fixtures shared by the dashboard tests (see tests/e2e/browser.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, Pages


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian chromium per test module (skips when it is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def pages(browser: Any) -> Iterator[Callable[[str], Pages]]:
    """``pages(server_url)`` -> :class:`Pages`; fails the test if any page logged an error."""
    made: list[Pages] = []

    def make(url: str) -> Pages:
        p = Pages(browser, url)
        made.append(p)
        return p

    yield make
    errors = [e for p in made for e in p.errors]
    failed = [r for p in made for r in p.failed]
    for p in made:
        p.close()
    assert not errors, (errors, "failed responses:", failed)
