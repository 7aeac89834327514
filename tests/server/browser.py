"""Playwright driving Debian's Chromium (``/usr/bin/chromium``; no browser download).

Without Chromium a browser test skips with the reason, except under ``CI=true`` where it
fails (``.ci/run`` installs it). Every page records the errors its scripts raise and any
dialog that opens (an ``alert`` would be a script run from data), and saves a screenshot
in the test's directory when it closes, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Dialog, Page, async_playwright, expect

CHROMIUM = "/usr/bin/chromium"

# every wait of a browser test has a timeout, generous for a loaded machine
expect.set_options(timeout=15_000)


def require_chromium() -> None:
    """Skip (or, under ``CI=true``, fail) when Chromium is not installed."""
    if os.path.exists(CHROMIUM):
        return
    reason = f"{CHROMIUM} is missing: install it with 'apt-get install -y chromium'"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Browsing:
    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def shot(self, path: Path) -> None:
        await self.page.screenshot(path=str(path), full_page=True)


@contextlib.asynccontextmanager
async def browsing(tmp_path: Path, name: str = "screenshot") -> AsyncIterator[Browsing]:
    """A fresh headless Chromium page; ``tmp_path/NAME.png`` is saved when it closes."""
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(15_000)
            seen = Browsing(page)
            page.on("pageerror", lambda error: seen.errors.append(str(error)))

            async def dialog(box: Dialog) -> None:
                seen.dialogs.append(box.message)
                await box.dismiss()

            page.on("dialog", dialog)
            try:
                yield seen
            finally:
                with contextlib.suppress(Exception):
                    await seen.shot(tmp_path / f"{name}.png")
        finally:
            await browser.close()
