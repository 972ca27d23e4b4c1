"""Browser tests: Debian's chromium (Playwright's own download is unreachable here)
driven against the app under a real uvicorn (`LiveServer`), on each database.

Playwright's sync API keeps its event loop marked as running on the thread that
drives it, for as long as it lives; every `asyncio.run()` on that thread then
fails, and the suite builds its data and databases with `asyncio.run()`. So the
browser lives on a thread of its own (`Browser.run`) while tests build data on
theirs. pytest-playwright still supplies the launch
options (`--headed`, `--slowmo`, `--browser-channel`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Page, Playwright, expect, sync_playwright

from tests.data import ADMIN_PASSWORD, create_user

T = TypeVar("T")
# `.ci/run` installs it with apt when missing.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ADMIN_EMAIL = "admin@example.com"
# A laptop's window; `narrow` tests use a phone's.
VIEWPORT = {"width": 1024, "height": 800}
# Longest wait for one step in the browser: a loaded CI machine, not a hang.
STEP_MS = 15_000
expect.set_options(timeout=STEP_MS)


class Browser:
    """One chromium, on the one thread that may drive it."""

    def __init__(self, launch_args: dict[str, Any]) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self._playwright: Playwright = self._call(lambda: sync_playwright().start())
        self._browser = self._call(
            lambda: self._playwright.chromium.launch(executable_path=CHROMIUM, **launch_args)
        )

    def _call(self, work: Callable[[], T]) -> T:
        return self._thread.submit(work).result(timeout=180)

    def run(self, scenario: Callable[[Page], T], **context_args: Any) -> T:
        """`scenario` on a fresh page of a fresh context (no cookies), on the browser's thread;
        its failures are re-raised here."""

        def inside() -> T:
            context = self._browser.new_context(
                **{"viewport": VIEWPORT, "accept_downloads": True, **context_args}
            )
            context.set_default_timeout(STEP_MS)
            try:
                return scenario(context.new_page())
            finally:
                context.close()

        return self._call(inside)

    def close(self) -> None:
        try:
            self._call(self._browser.close)
            self._call(self._playwright.stop)
        finally:
            self._thread.shutdown()


# Per module: the rest of the suite does not keep an idle browser's memory.
@pytest.fixture(scope="module")
def chromium(browser_type_launch_args: dict[str, Any]) -> Iterator[Browser]:
    opened = Browser(browser_type_launch_args)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def admin(db_url: str) -> str:
    """An administrator's email; the password is `ADMIN_PASSWORD`."""
    create_user(db_url, ADMIN_EMAIL, password=ADMIN_PASSWORD, name="Ada Admin", is_admin=True)
    return ADMIN_EMAIL


def sign_in(page: Page, base_url: str, email: str, password: str = ADMIN_PASSWORD) -> None:
    page.goto(f"{base_url}/console/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def signed_in(page: Page, base_url: str, email: str = ADMIN_EMAIL) -> None:
    sign_in(page, base_url, email)
    expect(page).to_have_url(f"{base_url}/console/export")


def screenshot(page: Page, db_url: str, name: str) -> None:
    """The README's pictures, on request (`REVIEWPOINT_TEST_SCREENSHOTS=1`) so that a
    test run leaves the tree clean; from the SQLite run only."""
    if os.environ.get("REVIEWPOINT_TEST_SCREENSHOTS") == "1" and db_url.startswith("sqlite"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
