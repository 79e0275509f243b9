"""Browser helpers: Playwright driving Debian's chromium, as a person's browser would see the pages.

Playwright's own browser builds come from a CDN this project cannot reach, so ``playwright install`` is never run:
the tests launch the system Chromium (``make chromium`` installs Debian's) through ``executable_path``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, async_playwright

REPO_ROOT = Path(__file__).resolve().parents[2]

# No sandbox: CI runs as root, where Chromium refuses to start sandboxed. /dev/shm may be small in containers,
# and there is no GPU: without these two flags Chromium can crash or stall on a headless server.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu")


def chromium_path() -> str:
    """The Chromium binary: ``NUDGE_CHROMIUM`` if set, else ``chromium`` on PATH.

    A missing browser is an error, not a skip: a skipped browser test would pass CI while testing nothing.
    """
    configured = os.environ.get("NUDGE_CHROMIUM")
    found = shutil.which(configured or "chromium")
    if found is None:
        raise RuntimeError(
            f"no Chromium at {configured or 'chromium (on PATH)'}: run `make chromium` "
            "(apt-get install chromium fonts-dejavu-core) or set NUDGE_CHROMIUM to a Chromium binary"
        )
    return found


@asynccontextmanager
async def launch_browser() -> AsyncIterator[Browser]:
    """A headless Chromium for one test; the browser and Playwright's driver process are closed on exit."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


def artifact_path(name: str) -> Path:
    """Where a test saves a screenshot or page dump for a person to look at: ``artifacts/`` (git-ignored)."""
    directory = REPO_ROOT / "artifacts"
    directory.mkdir(exist_ok=True)
    return directory / name
