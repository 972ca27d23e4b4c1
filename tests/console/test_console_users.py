"""The users page over HTTP: search by email, keyset pages, each change confirmed
first, the API's rules (the last active admin, one's own account), CSRF and bad input."""

from __future__ import annotations

import re
import sqlite3

import httpx
import pytest
from fastapi.testclient import TestClient

from reviewpoint.console.users_page import PAGE_ROWS
from tests.conftest import statements_sent
from tests.console.test_console_http import _csrf, _sign_in
from tests.data import ADMIN_PASSWORD, BULK_PASSWORD, create_user, insert_user, insert_users

USERS = "/console/users"
ADMIN_EMAIL = "admin@example.com"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def admin(db_url: str) -> int:
    return create_user(db_url, ADMIN_EMAIL, password=ADMIN_PASSWORD, is_admin=True)


@pytest.fixture
def signed_in(client: TestClient, admin: int) -> TestClient:
    assert _sign_in(client).status_code == 303
    return client


def _ids(page: httpx.Response) -> list[int]:
    return [int(found) for found in re.findall(r'<tr id="user-(\d+)">', page.text)]


def _row(page: httpx.Response, user_id: int) -> str:
    found = re.search(rf'<tr id="user-{user_id}">(.*?)</tr>', page.text, re.S)
    assert found is not None, page.text
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def _act(client: TestClient, user_id: int, action: str) -> httpx.Response:
    """What the confirmation page's button sends."""
    confirm = client.get(f"{USERS}/{user_id}/{action}")
    assert confirm.status_code == 200, confirm.text
    assert f'action="{USERS}/{user_id}/{action}"' in confirm.text
    return client.post(
        f"{USERS}/{user_id}/{action}", data={"csrf_token": _csrf(confirm)}, follow_redirects=False
    )


def _logs_in(client: TestClient, email: str, password: str = BULK_PASSWORD) -> bool:
    response = client.post("/api/v1/auth/login", data={"username": email, "password": password})
    return response.status_code == 200


def test_search_finds_a_user_by_email_whatever_its_ascii_case(
    signed_in: TestClient, db_url: str
) -> None:
    ann = insert_user(db_url, "Ann@Example.com", name="Ann")
    insert_user(db_url, "bob@example.com", name="Bob")
    page = signed_in.get(USERS, params={"email": "  ann@EXAMPLE.com "})
    assert page.status_code == 200
    assert _ids(page) == [ann]
    assert _row(page, ann).startswith(f"{ann} Ann@Example.com Ann yes no never Deactivate")
    missing = signed_in.get(USERS, params={"email": "nobody@example.com"})
    assert _ids(missing) == []
    assert "No live user has this email." in missing.text


def test_pages_follow_ids_with_neither_offset_nor_count(
    signed_in: TestClient, db_url: str, admin: int
) -> None:
    insert_users(db_url, [(f"user{i}@example.com", None) for i in range(2 * PAGE_ROWS + 10)])
    every = [admin, *range(admin + 1, admin + 1 + 2 * PAGE_ROWS + 10)]
    app = signed_in.app
    with statements_sent(app, lambda sql: "FROM users" in sql) as sent:
        first = signed_in.get(USERS)
        assert _ids(first) == every[:PAGE_ROWS]
        assert 'rel="prev"' not in first.text
        second = signed_in.get(_link(first, "next"))
        assert _ids(second) == every[PAGE_ROWS : 2 * PAGE_ROWS]
        third = signed_in.get(_link(second, "next"))
        assert _ids(third) == every[2 * PAGE_ROWS :]
        assert 'rel="next"' not in third.text
        back = signed_in.get(_link(third, "prev"))
        assert _ids(back) == every[PAGE_ROWS : 2 * PAGE_ROWS]
        assert _ids(signed_in.get(_link(back, "prev"))) == every[:PAGE_ROWS]
    listings = [(sql.lower(), params) for sql, params in sent if "ORDER BY users.id" in sql]
    assert len(listings) == 5
    assert not [sql for sql, _ in listings if "count(" in sql]
    # SQLAlchemy spells SQLite's LIMIT with an OFFSET, always 0 here.
    assert not [sql for sql, params in listings if "offset" in sql and params[-1] != 0]


def _link(page: httpx.Response, rel: str) -> str:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page.text)
    assert found is not None, page.text
    return found.group(1).replace("&amp;", "&")


@SQLITE_ONLY
def test_the_listing_walks_an_index_not_the_table(signed_in: TestClient, db_url: str) -> None:
    """SQLite's own plan for the statements the page sends (no statistics: it decides
    from the indexes alone); PostgreSQL's on a million users is in the README."""
    with statements_sent(signed_in.app, lambda sql: "ORDER BY users.id" in sql) as sent:
        signed_in.get(USERS, params={"after": "5"})
        signed_in.get(USERS, params={"before": "500"})
        signed_in.get(USERS, params={"email": "ann@example.com"})
    path = db_url.split("///", 1)[1]
    with sqlite3.connect(path) as connection:
        plans = [
            " ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in sent
        ]
    assert len(plans) == 3
    assert "SEARCH users USING INDEX ix_users_live_id (id>?)" in plans[0]
    assert "SEARCH users USING INDEX ix_users_live_id (id<?)" in plans[1]
    assert "SEARCH users USING INDEX uq_users_email_lower" in plans[2]
    assert not [plan for plan in plans if "SCAN users" in plan]
    # The email's index finds at most one live user: the sort is of that one row.
    assert "TEMP B-TREE" not in plans[0] + plans[1]


def test_deactivate_asks_first_and_reactivate_undoes_it(signed_in: TestClient, db_url: str) -> None:
    ann = insert_user(db_url, "ann@example.com")
    confirm = signed_in.get(f"{USERS}/{ann}/deactivate")
    assert "Deactivate ann@example.com?" in confirm.text
    assert _logs_in(signed_in, "ann@example.com")  # asking changed nothing

    response = _act(signed_in, ann, "deactivate")
    assert response.status_code == 303
    assert response.headers["location"] == f"{USERS}?email=ann%40example.com&done=deactivate"
    page = signed_in.get(response.headers["location"])
    assert "ann@example.com deactivated." in page.text
    assert re.match(rf"{ann} ann@example\.com no no \S+ \S+ Reactivate", _row(page, ann))
    assert not _logs_in(signed_in, "ann@example.com")

    assert _act(signed_in, ann, "reactivate").status_code == 303
    assert _logs_in(signed_in, "ann@example.com")


def test_delete_asks_first_and_the_user_leaves_the_listing(
    signed_in: TestClient, db_url: str, admin: int
) -> None:
    ann = insert_user(db_url, "ann@example.com")
    assert "This cannot be undone here." in signed_in.get(f"{USERS}/{ann}/delete").text
    response = _act(signed_in, ann, "delete")
    assert response.status_code == 303
    page = signed_in.get(response.headers["location"])
    assert "ann@example.com deleted." in page.text
    assert "No live user has this email." in page.text
    assert _ids(signed_in.get(USERS)) == [admin]
    assert not _logs_in(signed_in, "ann@example.com")


def test_the_last_active_admin_cannot_be_deactivated_and_the_page_says_why(
    signed_in: TestClient, admin: int
) -> None:
    response = _act(signed_in, admin, "deactivate")
    assert response.status_code == 409
    assert '<p class="error" role="alert">At least one active administrator must remain</p>' in (
        response.text
    )
    assert _row(response, admin).startswith(f"{admin} {ADMIN_EMAIL} (you) yes yes")
    assert signed_in.get(USERS).status_code == 200  # still signed in: nothing changed


def test_an_admin_cannot_delete_their_own_account(signed_in: TestClient, admin: int) -> None:
    page = signed_in.get(USERS)
    assert "Delete" not in _row(page, admin)
    confirm = signed_in.get(f"{USERS}/{admin}/delete")
    response = signed_in.post(f"{USERS}/{admin}/delete", data={"csrf_token": _csrf(confirm)})
    assert response.status_code == 409
    assert "Administrators cannot delete their own account" in response.text
    assert _ids(signed_in.get(USERS)) == [admin]


def test_deactivating_oneself_signs_one_out_when_another_admin_remains(
    signed_in: TestClient, db_url: str, admin: int
) -> None:
    insert_user(db_url, "second@example.com", is_admin=True)
    assert "your own account" in signed_in.get(f"{USERS}/{admin}/deactivate").text
    response = _act(signed_in, admin, "deactivate")
    assert response.status_code == 303
    after = signed_in.get(response.headers["location"], follow_redirects=False)
    assert after.headers["location"] == "/console/sign-in"


@pytest.mark.parametrize("token", [None, "forged"])
def test_a_change_without_the_forms_token_changes_nothing(
    signed_in: TestClient, db_url: str, token: str | None
) -> None:
    ann = insert_user(db_url, "ann@example.com")
    data = {} if token is None else {"csrf_token": token}
    for action in ("deactivate", "delete"):
        response = signed_in.post(f"{USERS}/{ann}/{action}", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.json()["detail"]
    assert _logs_in(signed_in, "ann@example.com")


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"after": "abc"}, "after must be a user id (a whole number), not &#39;abc&#39;."),
        ({"before": "-1"}, "before must be a user id (a whole number), not &#39;-1&#39;."),
        ({"after": "99999999999"}, "after must be a user id"),
        ({"email": "a" * 400}, "An email has at most 320 characters."),
    ],
)
def test_bad_search_or_paging_input_is_said_in_place(
    signed_in: TestClient, query: dict[str, str], message: str
) -> None:
    response = signed_in.get(USERS, params=query)
    assert response.status_code == 422
    assert message in response.text
    assert 'role="alert"' in response.text


@SQLITE_ONLY
def test_an_unknown_user_or_action_is_said_in_place(signed_in: TestClient, admin: int) -> None:
    confirm = signed_in.get(f"{USERS}/999/delete")
    assert confirm.status_code == 404
    assert "User not found" in confirm.text
    token = _csrf(confirm)
    gone = signed_in.post(f"{USERS}/999/deactivate", data={"csrf_token": token})
    assert gone.status_code == 404
    assert "User not found" in gone.text
    odd = signed_in.post(f"{USERS}/{admin}/promote", data={"csrf_token": token})
    assert odd.status_code == 404
    assert "&#39;promote&#39; is not something the console does to a user." in odd.text
    assert signed_in.get(f"{USERS}/{admin}/promote", follow_redirects=False).status_code == 303
