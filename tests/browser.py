"""A real browser for the tests that need one: Debian's Chromium, driven by Playwright.

Where either is missing the tests skip with the reason; with ``SIMULACRA_REQUIRE_BROWSER=1``
(set by ``.ci/run``) that skip is a failure instead, so CI cannot pass without the browser.
``scripts/test`` installs Chromium (as root) and the ``test`` extra installs Playwright; its
own browser download (``playwright install``) is never used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def _missing_reason() -> tuple[str | None, str]:
    """(why the browser tests cannot run or None, Chromium's path)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"Playwright for Python is not installed ({exc})", ""
    path = os.environ.get("SIMULACRA_CHROMIUM") or next(
        (found for name in CHROMIUM_NAMES if (found := shutil.which(name))), ""
    )
    if not path or not os.access(path, os.X_OK):
        return "Chromium is not installed (apt-get install chromium; scripts/test does it)", ""
    return None, path


def require_chromium() -> str:
    """Chromium's path, or skip (fail under SIMULACRA_REQUIRE_BROWSER=1) with why not."""
    reason, path = _missing_reason()
    if reason is not None:
        if os.environ.get("SIMULACRA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SIMULACRA_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return path


# Chromium asks Google's hosts for updates, sync and field trials at start: this machine's
# closed network refuses them, many at a time. Nothing here needs them.
QUIET = ["--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium_page() -> Iterator[Page]:
    """A page of a fresh headless Chromium (skips as ``require_chromium`` does)."""
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=QUIET)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()
