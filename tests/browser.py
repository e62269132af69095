"""The system Chromium driven by Playwright, for the report's browser tests and the
README screenshot. Never `playwright install` (it downloads a browser): the tests use
the Debian package (`apt-get install -y chromium`) or TRDSCREEN_CHROMIUM.

    python -m tests.browser RUN_DIR docs/report.png   # the README's screenshot
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The Chromium executable to drive, or None."""
    named = os.environ.get("TRDSCREEN_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if chromium() is None:
        return (
            "no Chromium found: apt-get install -y chromium (or set TRDSCREEN_CHROMIUM to a "
            "Chromium executable); never `playwright install`"
        )
    return None


def launch(playwright):
    """Headless Chromium; without its sandbox when run as root (as CI runs)."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return playwright.chromium.launch(
        executable_path=chromium(), args=["--no-sandbox"] if root else []
    )


def screenshot(report: Path, out: Path) -> None:
    """The top of a report (header and flow diagram) as a PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1040, "height": 1500})
        page.goto(report.resolve().as_uri())
        page.screenshot(path=str(out))
        browser.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]) / "report.html", Path(sys.argv[2]))
