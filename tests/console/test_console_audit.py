"""The console's audit page over HTTP: filters, paging, bad input said in place, and a
chart whose numbers are the records'."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect

from reviewpoint.audit import service
from reviewpoint.auth.deps import ExportPrincipal
from reviewpoint.console.audit_chart import MAX_DAYS
from reviewpoint.console.audit_page import PAGE_SIZE
from reviewpoint.db import standalone_session, utcnow
from reviewpoint.exports.attempt import ExportAttempt, Outcome
from tests.audit.records import key_actor, settled_rows, user_actor
from tests.conftest import LiveServer
from tests.console.conftest import ADMIN_EMAIL, Browser, screenshot, signed_in
from tests.data import ADMIN_PASSWORD, create_api_key, create_user, insert_users, login

AUDIT_PAGE = "/console/audit"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
ALICE = user_actor(7, "alice@example.com")
SYNC = key_actor(3, "nightly sync", "0a1b2c3d4e5f")
# Records of the last days, at times that test the UTC day's edges.
TODAY = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)


def add_records(
    db_url: str, records: list[tuple[datetime, Outcome, ExportPrincipal | None, int]]
) -> None:
    """(started_at, outcome, actor, rows) each, written by the audit service in one transaction."""

    async def run() -> None:
        async with standalone_session(db_url) as session:
            for started_at, outcome, actor, rows in records:
                attempt = ExportAttempt(
                    endpoint="export-full",
                    format="csv",
                    filters={},
                    request_id=uuid.uuid4().hex,
                    client_address="10.0.0.7",
                    user_agent="test_console_audit.py",
                    started_at=started_at,
                    principal=actor,
                    outcome=outcome,
                    status=200 if outcome == "completed" else 403,
                    rows=rows,
                    bytes=rows * 40,
                    finished_at=started_at + timedelta(seconds=1),
                )
                await service.record(session, attempt)

    asyncio.run(run())


class _Tables(HTMLParser):
    """The text of every cell of every table, by the table's id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def listed(html: str) -> list[list[str]]:
    """The audit table's records (its header row left out)."""
    return tables(html)["audit-table"][1:]


@pytest.fixture
def console(client: TestClient, db_url: str) -> TestClient:
    """A client signed in to the console as an admin."""
    create_user(db_url, ADMIN_EMAIL, password=ADMIN_PASSWORD, is_admin=True)
    form = client.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    response = client.post(
        "/console/sign-in",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    return client


def test_the_page_lists_the_last_30_days_newest_first(console: TestClient, db_url: str) -> None:
    add_records(
        db_url,
        [
            (TODAY - timedelta(days=31), "completed", ALICE, 1),  # before the default range
            (TODAY - timedelta(days=29), "completed", ALICE, 2),
            (TODAY - timedelta(hours=1), "denied", None, 0),
            (TODAY, "completed", SYNC, 3),
        ],
    )
    response = console.get(AUDIT_PAGE)
    assert response.status_code == 200
    assert '<a href="/console/audit" aria-current="page">Audit</a>' in response.text
    rows = listed(response.text)
    assert [(row[3], row[5]) for row in rows] == [
        ("completed", "3"),
        ("denied", "0"),
        ("completed", "2"),
    ]
    assert rows[0][1].startswith("nightly sync api_key:3 · 0a1b2c3d4e5f")
    assert rows[1][1] == "none recognised"
    assert "Records 1 to 3 of 3, newest first" in response.text


def test_filters_narrow_by_actor_outcome_and_days(console: TestClient, db_url: str) -> None:
    day = datetime(2026, 11, 10, tzinfo=UTC)
    add_records(
        db_url,
        [
            (day - timedelta(microseconds=1), "completed", ALICE, 10),  # the day before
            (day, "completed", ALICE, 11),
            (day + timedelta(hours=23, minutes=59), "denied", ALICE, 0),
            (day + timedelta(days=1, hours=1), "completed", ALICE, 12),
            (day + timedelta(days=2), "completed", ALICE, 13),  # the day after "to"
            (day + timedelta(hours=5), "completed", SYNC, 14),
        ],
    )

    def rows_of(**query: str) -> list[str]:
        response = console.get(AUDIT_PAGE, params=query)
        assert response.status_code == 200, response.text
        return [row[5] for row in listed(response.text)]

    # "to" is a whole day; "from" a day's start or an instant.
    assert rows_of(**{"from": "2026-11-10", "to": "2026-11-11"}) == ["12", "0", "14", "11"]
    assert rows_of(**{"from": "2026-11-10T05:00:00Z", "to": "2026-11-10"}) == ["0", "14"]
    assert rows_of(**{"from": "2026-11-10", "to": "2026-11-11", "actor": "user:7"}) == [
        "12",
        "0",
        "11",
    ]
    assert rows_of(
        **{"from": "2026-11-09", "to": "2026-11-12", "actor": "user:7", "outcome": "completed"}
    ) == ["13", "12", "11", "10"]
    assert rows_of(**{"from": "2026-11-01", "outcome": "denied"}) == ["0"]
    # The form shows the filters back, for the next change.
    page = console.get(AUDIT_PAGE, params={"actor": "api_key:3", "outcome": "denied"}).text
    assert 'name="actor" type="text" value="api_key:3"' in page
    assert '<option value="denied" selected>' in page


def test_pages_keep_the_filters_and_meet_without_gaps(console: TestClient, db_url: str) -> None:
    start = TODAY - timedelta(days=2)
    add_records(
        db_url,
        [(start + timedelta(minutes=i), "completed", ALICE, i) for i in range(PAGE_SIZE + 5)]
        + [(start, "denied", ALICE, 0)],
    )
    first = console.get(AUDIT_PAGE, params={"outcome": "completed"})
    assert f"Records 1 to {PAGE_SIZE} of {PAGE_SIZE + 5}" in first.text
    older = re.search(r'<a href="([^"]+)" hx-get="[^"]+" hx-target="#audit-results"', first.text)
    assert older is not None
    assert older.group(1) == f"{AUDIT_PAGE}?outcome=completed&amp;offset={PAGE_SIZE}"
    second = console.get(older.group(1).replace("&amp;", "&"))
    assert f"Records {PAGE_SIZE + 1} to {PAGE_SIZE + 5} of {PAGE_SIZE + 5}" in second.text
    shown = [int(row[5]) for row in listed(first.text) + listed(second.text)]
    assert shown == list(reversed(range(PAGE_SIZE + 5)))
    assert 'rel="next"' not in second.text
    assert f'href="{AUDIT_PAGE}?outcome=completed" hx-get' in second.text  # back to page 1


# Each bad value, in place of the results; one client for all (no database decides these).
BAD_FILTERS = [
    ({"from": "yesterday"}, "From: must be a day (2026-11-26) or an ISO 8601 time"),
    ({"to": "2026-13-01"}, "To: must be a day (2026-11-26) or an ISO 8601 time"),
    ({"to": "2026-11-01T10:00:00"}, "To: must be a day"),
    ({"to": "9999-12-31"}, "To: out of range"),
    ({"from": "2026-11-02", "to": "2026-11-01"}, "From: must be before To"),
    ({"actor": "alice"}, "Actor: must be user:ID, api_key:ID or cli:UID"),
    ({"outcome": "lost"}, "Outcome: must be one of running, completed"),
    ({"offset": "-50"}, "Page: the offset must be a whole number"),
]


@SQLITE_ONLY
def test_a_bad_filter_is_said_in_place(console: TestClient) -> None:
    for query, message in BAD_FILTERS:
        response = console.get(AUDIT_PAGE, params=query)
        assert response.status_code == 422, query
        alert = re.search(r'<p class="error" role="alert">([^<]*)</p>', response.text)
        assert alert is not None, response.text
        assert message in alert.group(1), (query, alert.group(1))
        assert 'id="audit-table"' not in response.text
        # The form keeps what was typed, to correct it.
        for name, value in query.items():
            if name in ("actor", "from", "to"):
                assert f'value="{value}"' in response.text


@SQLITE_ONLY
def test_htmx_gets_the_results_alone_and_errors_as_a_swappable_200(
    console: TestClient, db_url: str
) -> None:
    add_records(db_url, [(TODAY, "completed", ALICE, 5)])
    htmx = {"HX-Request": "true"}
    fragment = console.get(AUDIT_PAGE, params={"outcome": "completed"}, headers=htmx)
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and 'id="audit-form"' not in fragment.text
    assert [row[5] for row in listed(fragment.text)] == ["5"]
    bad = console.get(AUDIT_PAGE, params={"from": "soon"}, headers=htmx)
    assert bad.status_code == 200
    assert 'role="alert">From: must be' in bad.text
    # htmx's history restore (back button, cache miss) needs the whole page.
    restore = console.get(AUDIT_PAGE, headers={**htmx, "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text


def test_the_chart_adds_up_to_the_records(console: TestClient, db_url: str) -> None:
    day = datetime(2026, 11, 20, tzinfo=UTC)
    records: list[tuple[datetime, Outcome, ExportPrincipal | None, int]] = [
        (day - timedelta(microseconds=1), "completed", ALICE, 100),  # the 19th, last instant
        (day, "completed", ALICE, 40),
        (day + timedelta(hours=3), "completed", SYNC, 2),
        (day + timedelta(hours=4), "denied", None, 0),
        (day + timedelta(hours=23, minutes=59, seconds=59), "aborted", SYNC, 7),
        (day + timedelta(days=3), "limited", ALICE, 0),
        (day + timedelta(days=3, hours=1), "completed", SYNC, 1_000_000),
    ]
    add_records(db_url, records)
    response = console.get(AUDIT_PAGE, params={"from": "2026-11-15", "to": "2026-11-24"})
    assert response.status_code == 200

    numbers = tables(response.text)["chart-numbers"]
    header, body = numbers[0], numbers[1:]
    # Outcomes in the audit's own order, only those that occur.
    assert header == ["Day", "completed", "aborted", "denied", "limited", "All", "Rows"]
    expected: dict[str, Counter[str]] = {}
    rows: Counter[str] = Counter()
    for started_at, outcome, _, sent in records:
        day_text = started_at.date().isoformat()
        expected.setdefault(day_text, Counter())[outcome] += 1
        rows[day_text] += sent
    assert [row[0] for row in body] == sorted(expected)
    for row in body:
        counts = expected[row[0]]
        assert row[1:5] == [str(counts[outcome]) for outcome in header[1:5]]
        assert row[5] == str(sum(counts.values()))
        assert row[6] == f"{rows[row[0]]:,}"
    # The chart covers the table's records, no more and no fewer.
    assert f"Records 1 to {len(records)} of {len(records)}" in response.text
    assert (
        "7 export attempts from 2026-11-15 to 2026-11-24 (UTC): 4 completed, 1 aborted, "
        "1 denied, 1 limited; 1,000,149 rows exported. Busiest day: 2026-11-20, with 4."
    ) in response.text
    # Every attempt is one bar segment; a day's rows one bar below.
    assert response.text.count('<rect class="o-') == 6  # (day, outcome) pairs
    assert response.text.count('<rect class="rows-bar"') == 3
    assert "<title>2026-11-20: 2 completed</title>" in response.text

    # Filtered, the chart counts what the table lists.
    denied = console.get(
        AUDIT_PAGE, params={"from": "2026-11-15", "to": "2026-11-24", "actor": "api_key:3"}
    )
    assert "3 export attempts from 2026-11-15" in denied.text
    assert len(listed(denied.text)) == 3


@SQLITE_ONLY
def test_a_range_past_the_charts_days_lists_records_without_a_chart(
    console: TestClient, db_url: str
) -> None:
    add_records(db_url, [(TODAY, "completed", ALICE, 5)])
    first = (TODAY - timedelta(days=MAX_DAYS)).date().isoformat()
    response = console.get(AUDIT_PAGE, params={"from": first})
    assert response.status_code == 200
    assert f"The chart covers at most {MAX_DAYS} days: narrow the range to see it." in response.text
    assert 'id="audit-chart"' not in response.text
    assert len(listed(response.text)) == 1
    # One day less, and it is drawn.
    later = (TODAY - timedelta(days=MAX_DAYS - 1)).date().isoformat()
    assert 'id="audit-chart"' in console.get(AUDIT_PAGE, params={"from": later}).text


def test_an_admin_filters_the_audit_of_real_exports_and_reads_the_chart(
    chromium: Browser, live_server: LiveServer, admin: str, db_url: str
) -> None:
    """Exports through the API, then the audit page in a browser: the nav link, the
    chart, filtering by outcome (htmx, the URL kept), by actor (its link), a bad day."""
    insert_users(db_url, [(f"user{i}@example.com", f"User {i}") for i in range(3)])
    key_id, secret = create_api_key(db_url, ["users:export_full"], name="browser sync")
    base = live_server.url
    with httpx.Client(base_url=base, timeout=30) as client:
        bearer = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        for headers in (bearer, bearer, {"X-API-Key": secret}, {"X-API-Key": "rvp_nope"}):
            client.get("/api/v1/users/export-full", params={"format": "csv"}, headers=headers)
    settled_rows(db_url, 4)
    # A few weeks of history, so the chart has days to show.
    history: list[tuple[datetime, Outcome, ExportPrincipal | None, int]] = [
        (TODAY - timedelta(days=day, hours=hour), outcome, ALICE, 1_000 * (day % 4))
        for day in range(1, 27, 2)
        for hour, outcome in enumerate(("completed", "denied", "limited")[: day % 3 + 1])
    ]
    add_records(db_url, history)
    total = 4 + len(history)
    errors: list[str] = []

    def scenario(page: Page) -> None:
        page.on("console", lambda message: errors.append(message.text))
        signed_in(page, base)
        page.get_by_role("link", name="Audit").click()
        expect(page).to_have_url(f"{base}/console/audit")
        expect(page.get_by_role("link", name="Audit")).to_have_attribute("aria-current", "page")
        caption = page.locator("#audit-table caption")
        expect(caption).to_have_text(f"Records 1 to {total} of {total}, newest first")
        expect(page.get_by_role("img", name="Exports per day by outcome")).to_be_visible()
        expect(page.locator(".legend")).to_contain_text("denied")
        screenshot(page, db_url, "console-audit")

        # By outcome: htmx swaps the results, the address bar keeps the filter.
        page.get_by_label("Outcome", exact=True).select_option("denied")
        page.get_by_role("button", name="Filter").click()
        denied = 1 + sum(1 for record in history if record[1] == "denied")
        expect(caption).to_have_text(f"Records 1 to {denied} of {denied}, newest first")
        expect(page).to_have_url(re.compile(r"outcome=denied"))
        expect(page.locator("#chart-desc")).to_contain_text(f"{denied} export attempts")

        # By actor: the key's link in the table; then its completed exports alone.
        page.get_by_role("link", name="Clear").click()
        page.get_by_role("link", name="browser sync").click()
        expect(page).to_have_url(re.compile(f"actor=api_key%3A{key_id}"))
        expect(page.get_by_label("Actor", exact=True)).to_have_value(f"api_key:{key_id}")
        page.get_by_label("Outcome", exact=True).select_option("completed")
        page.get_by_role("button", name="Filter").click()
        expect(caption).to_have_text("Records 1 to 1 of 1, newest first")
        expect(page.locator("#audit-table tbody tr td").nth(3)).to_have_text("completed")
        expect(page.locator(".legend")).to_contain_text("completed 1")
        # Its export sent every user: the three and the admin.
        expect(page.locator(".legend")).to_contain_text("rows exported 4")

        # A day that is not one is said in place; the form stays as typed.
        page.get_by_label("From", exact=True).fill("last week")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("alert")).to_contain_text("From: must be a day")
        expect(page.get_by_label("From", exact=True)).to_have_value("last week")

        # On a 375 px phone the page does not scroll sideways (the table scrolls in its box).
        page.set_viewport_size({"width": 375, "height": 800})
        page.get_by_role("link", name="Clear").click()
        expect(page.get_by_role("img", name="Exports per day by outcome")).to_be_visible()
        assert page.evaluate("() => document.documentElement.scrollWidth") == 375

    chromium.run(scenario)
    # No script or style was refused by the Content-Security-Policy.
    assert not [text for text in errors if "Content Security Policy" in text], errors
