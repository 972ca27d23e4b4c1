"""The flags and users pages in a real browser: a flag turned off in the console
closes its API endpoint and on again reopens it; users found, deactivated and
deleted, each after a confirmation."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import LiveServer
from tests.console.conftest import Browser, screenshot, signed_in
from tests.data import create_api_key, insert_user, insert_users


def test_a_flag_turned_off_in_the_console_closes_the_api_and_on_again_reopens_it(
    chromium: Browser, live_server: LiveServer, admin: str, db_url: str
) -> None:
    _, secret = create_api_key(db_url, ["users:export_full"], name="warehouse")
    base = live_server.url

    def export_status() -> int:
        return httpx.get(
            f"{base}/api/v1/users/export-full", headers={"X-API-Key": secret}, timeout=30
        ).status_code

    def scenario(page: Page) -> None:
        assert export_status() == 200
        signed_in(page, base)
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Flags").click()
        expect(
            page.get_by_role("navigation", name="Console").get_by_role("link", name="Flags")
        ).to_have_attribute("aria-current", "page")
        row = page.locator("#flag-users-export_full")
        expect(row).to_contain_text("default (nothing set)")
        expect(page.locator("#flag-changes")).to_contain_text("No changes yet")

        row.get_by_role("link", name="Turn off users:export_full").click()
        expect(page.get_by_role("heading")).to_have_text("Turn off users:export_full?")
        assert export_status() == 200  # asking changes nothing
        page.get_by_role("button", name="Turn off").click()
        expect(page).to_have_url(f"{base}/console/flags")
        expect(row.locator("td").nth(1)).to_have_text("off")
        expect(row).to_contain_text(f"override by {admin}")
        changes = page.locator("#flag-changes tbody tr")
        expect(changes.first).to_contain_text("disable: on → off")
        expect(changes.first).to_contain_text(admin)
        assert export_status() == 403

        row.get_by_role("link", name="Turn on users:export_full").click()
        page.get_by_role("button", name="Turn on").click()
        expect(row.locator("td").nth(1)).to_have_text("on")
        expect(changes).to_have_count(2)
        expect(changes.first).to_contain_text("enable: off → on")
        assert export_status() == 200
        screenshot(page, db_url, "console-flags")

        row.get_by_role("link", name="Reset users:export_full").click()
        page.get_by_role("button", name="Reset").click()
        expect(row).to_contain_text("default (nothing set)")
        expect(changes).to_have_count(3)

    chromium.run(scenario)


def test_an_admin_finds_deactivates_and_deletes_users_after_confirming(
    chromium: Browser, live_server: LiveServer, admin: str, db_url: str
) -> None:
    insert_users(
        db_url,
        [
            ("grace@example.com", "Grace Hopper"),
            ("alan@example.com", "Alan Turing"),
            ("edsger@example.com", "Edsger Dijkstra"),
        ],
    )
    ann = insert_user(db_url, "Ann@Example.com", name="Ann Analyst")
    bob = insert_user(db_url, "bob@example.com", name="Bob Builder")
    base = live_server.url

    def scenario(page: Page) -> None:
        signed_in(page, base)
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Users").click()
        expect(page.locator("#users tbody tr")).to_have_count(6)
        expect(page.locator("#users")).to_contain_text(f"{admin} (you)")

        page.get_by_label(re.compile("^Email")).fill("ann@example.com")
        page.get_by_role("button", name="Search").click()
        rows = page.locator("#users tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Ann Analyst")
        rows.first.get_by_role("link", name="Deactivate Ann@Example.com").click()
        expect(page.get_by_role("heading")).to_have_text("Deactivate Ann@Example.com?")
        page.get_by_role("button", name="Deactivate").click()
        expect(page.get_by_role("status")).to_have_text("Ann@Example.com deactivated.")
        expect(page.locator(f"#user-{ann} td").nth(3)).to_have_text("no")

        page.get_by_label(re.compile("^Email")).fill("bob@example.com")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name="Delete bob@example.com").click()
        expect(page.get_by_role("heading")).to_have_text("Delete bob@example.com?")
        page.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("status")).to_have_text("bob@example.com deleted.")
        expect(page.locator("#users")).to_contain_text("No live user has this email.")

        page.get_by_role("link", name="Every user").click()
        expect(page.locator("#users tbody tr")).to_have_count(5)
        expect(page.locator(f"#user-{bob}")).to_have_count(0)
        screenshot(page, db_url, "console-users")

    chromium.run(scenario)
