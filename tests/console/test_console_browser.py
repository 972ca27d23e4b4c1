"""The console in a real browser: sign in and out, who may, the download, CSRF and CSP.

Each test builds its data here, then drives the browser in a scenario run on the
browser's thread (`Browser.run`, tests/console/conftest.py).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import openpyxl
import pytest
from playwright.sync_api import Page, expect

from reviewpoint.console.sessions import SESSION_COOKIE
from tests.conftest import LiveServer
from tests.console.conftest import ADMIN_EMAIL, Browser, screenshot, sign_in, signed_in
from tests.data import (
    ADMIN_PASSWORD,
    create_user,
    insert_user,
    insert_users,
    login,
)

# Names that test each format's escaping and Unicode.
# For what no database decides (layout, messages): one run is enough.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
NAMES = [None, "Doe, Jane", 'Ann "Nancy" O\'Neil', "=HYPERLINK(1)", "名前 🙂", ""]


def _session_cookie(page: Page) -> str | None:
    found = [c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    return found[0] if found else None


def test_an_admin_signs_in_and_out_and_the_session_ends_on_the_server(
    chromium: Browser, live_server: LiveServer, admin: str, db_url: str
) -> None:
    base = live_server.url

    def scenario(page: Page) -> str:
        page.goto(f"{base}/console")
        expect(page).to_have_url(f"{base}/console/sign-in")
        screenshot(page, db_url, "console-sign-in")
        signed_in(page, base)
        expect(page.get_by_text(admin)).to_be_visible()
        cookie = _session_cookie(page)
        assert cookie is not None
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{base}/console/sign-in")
        assert _session_cookie(page) is None
        return cookie

    cookie = chromium.run(scenario)
    # The old cookie, replayed, opens nothing: the session is gone on the server.
    replayed = httpx.get(
        f"{base}/console/export", cookies={SESSION_COOKIE: cookie}, follow_redirects=False
    )
    assert replayed.status_code == 303
    assert replayed.headers["location"] == "/console/sign-in"


def test_a_user_who_is_not_an_admin_cannot_sign_in(
    chromium: Browser, live_server: LiveServer, db_url: str
) -> None:
    create_user(db_url, "user@example.com", password="user-password-1")
    base = live_server.url

    def scenario(page: Page) -> None:
        sign_in(page, base, "user@example.com", "user-password-1")
        expect(page.get_by_role("alert")).to_have_text(
            "Only administrators can sign in to the console."
        )
        assert _session_cookie(page) is None
        page.goto(f"{base}/console/export")
        expect(page).to_have_url(f"{base}/console/sign-in")

    chromium.run(scenario)


@SQLITE_ONLY
def test_a_wrong_password_is_said_in_place(
    chromium: Browser, live_server: LiveServer, admin: str, db_url: str
) -> None:
    def scenario(page: Page) -> None:
        sign_in(page, live_server.url, admin, "not-the-password")
        expect(page.get_by_role("alert")).to_have_text("Incorrect email or password.")
        expect(page.get_by_label("Email")).to_have_value(admin)
        screenshot(page, db_url, "console-sign-in-error")

    chromium.run(scenario)


@pytest.mark.parametrize("export_format", ["csv", "xlsx"])
def test_the_download_is_the_api_export_byte_for_byte(
    chromium: Browser, live_server: LiveServer, admin: str, db_url: str, export_format: str
) -> None:
    insert_users(db_url, [(f"user{i}@example.com", name) for i, name in enumerate(NAMES)])
    insert_user(db_url, "inactive@example.com", name="Gone", is_active=False)
    base = live_server.url
    fields = "email,id,name,created_at,is_active"

    def scenario(page: Page) -> tuple[dict[str, str], str, str, bytes]:
        signed_in(page, base)
        page.get_by_label("Format", exact=True).select_option(export_format)
        page.get_by_label("Fields, in order").fill(fields)
        page.get_by_label("Active", exact=True).select_option("true")
        link = page.locator("#download")
        # The count follows the form (htmx): every user but the inactive one.
        expect(link).to_have_attribute("href", re.compile(r"is_active=true"))
        expect(page.locator("#row-count")).to_have_text(str(len(NAMES) + 1))
        if export_format == "csv":
            screenshot(page, db_url, "console-export")
        href = link.get_attribute("href")
        assert href is not None
        with page.expect_download() as started:
            link.click()
        download = started.value
        body = Path(download.path()).read_bytes()
        count = page.locator("#row-count").inner_text()
        return dict(parse_qsl(urlsplit(href).query)), count, download.suggested_filename, body

    query, count, filename, downloaded = chromium.run(scenario)

    assert query == {"format": export_format, "fields": fields, "is_active": "true"}
    with httpx.Client(base_url=base, timeout=30) as client:
        api = client.get(
            "/api/v1/users/export-full",
            params=query,
            headers=login(client, ADMIN_EMAIL, ADMIN_PASSWORD),
        )
    assert api.status_code == 200
    assert filename == f"users_full_export.{export_format}"
    assert count == api.headers["X-Export-Rows"]
    if export_format == "csv":
        assert downloaded == api.content
        return
    # A workbook's zip entries carry the moment they were written (2 s steps): the
    # entries, not those stamps, are what must be equal.
    with (
        zipfile.ZipFile(io.BytesIO(downloaded)) as ours,
        zipfile.ZipFile(io.BytesIO(api.content)) as theirs,
    ):
        assert ours.namelist() == theirs.namelist()
        for name in ours.namelist():
            assert ours.read(name) == theirs.read(name), name
    sheet = openpyxl.load_workbook(io.BytesIO(downloaded), read_only=True).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == tuple(fields.split(","))
    assert len(rows) == 1 + len(NAMES) + 1


def test_the_export_page_shows_the_equivalent_commands_ready_to_copy(
    chromium: Browser, live_server: LiveServer, admin: str
) -> None:
    base = live_server.url

    def scenario(page: Page) -> None:
        signed_in(page, base)
        page.get_by_label("Minimal (id, email, name)").check()
        page.get_by_label("At most").fill("5")
        curl = page.get_by_label(re.compile("With curl"))
        expect(curl).to_have_value(re.compile(r"limit=5"))
        assert curl.input_value() == (
            'curl -fsS -H "Authorization: Bearer $REVIEWPOINT_TOKEN" -o users_export.csv '
            f"'{base}/api/v1/users/export?format=csv&limit=5'"
        )
        expect(page.get_by_label("On a server, with the CLI")).to_have_value(
            "reviewpoint export --format csv --limit 5 -o users_export.csv"
        )
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page.get_by_role("button", name="Copy the CLI command").click()
        expect(page.get_by_role("button", name="Copy the CLI command")).to_have_text("Copied")
        copied = page.evaluate("() => navigator.clipboard.readText()")
        assert copied == "reviewpoint export --format csv --limit 5 -o users_export.csv"

    chromium.run(scenario)


@SQLITE_ONLY
def test_a_bad_filter_is_explained_in_place_without_a_download(
    chromium: Browser, live_server: LiveServer, admin: str
) -> None:
    def scenario(page: Page) -> None:
        signed_in(page, live_server.url)
        page.get_by_label("Created after").fill("yesterday")
        expect(page.get_by_role("alert")).to_contain_text("created_after")
        expect(page.locator("#download")).to_have_count(0)

    chromium.run(scenario)


def test_a_forged_cross_site_post_changes_nothing(
    chromium: Browser, live_server: LiveServer, admin: str
) -> None:
    base = live_server.url
    forged = (
        f'<form method="post" action="{base}/console/sign-out">'
        '<input type="hidden" name="csrf_token" value="guessed">'
        "<button>Win a prize</button></form>"
    )

    def scenario(page: Page) -> None:
        signed_in(page, base)
        page.route(
            "http://attacker.test/**",
            lambda route: route.fulfill(status=200, content_type="text/html", body=forged),
        )
        page.goto("http://attacker.test/")
        with page.expect_navigation():
            page.get_by_role("button", name="Win a prize").click()
        # The browser sent no session (SameSite=Strict): the POST was nobody's.
        expect(page).to_have_url(f"{base}/console/sign-in")
        page.goto(f"{base}/console/export")
        expect(page).to_have_url(f"{base}/console/export")  # still signed in

        # Even with the cookie attached, a POST without the form's token is refused.
        refused = page.request.post(f"{base}/console/sign-out", form={"csrf_token": "guessed"})
        assert refused.status == 403
        assert "CSRF" in refused.json()["detail"]
        page.goto(f"{base}/console/export")
        expect(page).to_have_url(f"{base}/console/export")

    chromium.run(scenario)


def test_pages_run_under_a_strict_csp_with_no_inline_script_or_style(
    chromium: Browser, live_server: LiveServer, admin: str
) -> None:
    base = live_server.url

    def scenario(page: Page) -> list[str]:
        violations: list[str] = []
        page.on(
            "console",
            lambda message: (
                violations.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        page.goto(f"{base}/console/sign-in")
        _assert_strict(page)
        signed_in(page, base)
        _assert_strict(page)
        page.get_by_label("At most").fill("1")  # htmx swaps the preview in
        expect(page.locator("#download")).to_have_attribute("href", re.compile("limit=1"))
        _assert_strict(page)
        return violations

    assert chromium.run(scenario) == []


def _assert_strict(page: Page) -> None:
    response = page.request.get(page.url)
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    inline = page.evaluate(
        """() => ({
            scripts: document.querySelectorAll("script:not([src])").length,
            styles: document.querySelectorAll("style").length,
            attributes: document.querySelectorAll("[style], [onclick], [onload]").length,
        })"""
    )
    assert inline == {"scripts": 0, "styles": 0, "attributes": 0}


def test_a_key_is_created_used_rotated_and_revoked(
    chromium: Browser, live_server: LiveServer, admin: str, db_url: str
) -> None:
    base = live_server.url
    export = f"{base}/api/v1/users/export"

    def status(secret: str) -> int:
        return httpx.get(export, headers={"X-API-Key": secret}, timeout=30).status_code

    def scenario(page: Page) -> None:
        signed_in(page, base)
        page.get_by_role("link", name="API keys").click()
        page.get_by_label("Name").fill("nightly report")
        page.get_by_label("users:export", exact=True).check()
        page.get_by_label("Expires after").fill("30")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_role("status")).to_contain_text("shown only this once")
        first = page.get_by_label(re.compile("Secret of")).input_value()
        screenshot(page, db_url, "console-key-created")
        assert status(first) == 200

        page.get_by_role("link", name="Back to the keys").click()
        row = page.locator("tbody tr", has_text="nightly report")
        expect(row).to_contain_text("users:export")
        expect(row).to_contain_text(admin)
        expect(row).to_contain_text("live")
        screenshot(page, db_url, "console-keys")

        row.get_by_role("link", name=re.compile("Rotate")).click()
        page.get_by_label(re.compile("keeps working for")).fill("0")
        screenshot(page, db_url, "console-key-rotate")
        page.get_by_role("button", name="Rotate").click()
        second = page.get_by_label(re.compile("Secret of")).input_value()
        assert second != first
        assert status(first) == 401  # no grace: the old secret stopped at once
        assert status(second) == 200

        page.get_by_role("link", name="Back to the keys").click()
        live = page.locator("tbody tr", has_text="live")
        expect(live).to_have_count(1)
        live.get_by_role("link", name=re.compile("Revoke")).click()
        expect(page.get_by_role("heading")).to_contain_text("Revoke key nightly report")
        page.get_by_role("button", name="Revoke").click()
        expect(page).to_have_url(f"{base}/console/keys")
        expect(page.locator("tbody tr", has_text="live")).to_have_count(0)
        assert status(second) == 401

    chromium.run(scenario)


@SQLITE_ONLY
def test_a_page_whose_session_ended_goes_to_sign_in_at_the_next_change(
    chromium: Browser, live_server: LiveServer, admin: str
) -> None:
    base = live_server.url

    def scenario(page: Page) -> None:
        signed_in(page, base)
        page.context.clear_cookies()  # as if signed out in another tab
        page.get_by_label("At most").fill("3")  # htmx asks for the count
        expect(page).to_have_url(f"{base}/console/sign-in")

    chromium.run(scenario)
