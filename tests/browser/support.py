"""Browser tests' support: Debian's chromium under playwright, or a skip (a failure in CI)."""

from __future__ import annotations

import shutil
from typing import Any, NoReturn

from tests.helpers import required

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def missing(reason: str) -> NoReturn:
    """Skip with *reason*; fail instead when ``CI`` is set, where a skip would hide a gap."""
    required(reason, ci_message=f"{reason} (CI is set: browser tests must run)")


def chromium_path() -> str:
    """The chromium executable, or a skip (a failure in CI) saying how to install it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("chromium is not installed: apt-get install -y chromium")
    return path


def launch(playwright: Any) -> Any:
    """A headless chromium browser driven by *playwright*."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
