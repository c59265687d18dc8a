"""A real headless browser for the tests: Debian's Chromium driven by Playwright.

Without Playwright or Chromium a browser test skips, unless ``PORTRAIT_REQUIRE_BROWSER=1``
(CI) turns that into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PORTRAIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def require_browser() -> None:
    """Skip (or fail, with PORTRAIT_REQUIRE_BROWSER=1) when no browser can run."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing = "playwright (pip install -e '.[dev]')"
    else:
        missing = None if Path(CHROMIUM).exists() else f"Chromium at {CHROMIUM}"
    if missing:
        if os.environ.get("PORTRAIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser tests need {missing} (PORTRAIT_REQUIRE_BROWSER=1)")
        pytest.skip(f"no {missing}")
