"""Browser fixtures: one chromium per test module; each test opens its own context."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.support import chromium_path, launch, missing


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium (playwright's sync API: only for plain ``def`` tests)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: pip install 'trioshop[test]'")
    chromium_path()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()
