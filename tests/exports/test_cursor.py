"""Incremental sync: `X-Export-Cursor` on every export, `cursor=` returns what changed since."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reviewpoint.config import Settings
from reviewpoint.db import create_engine, standalone_session
from reviewpoint.exports import cursor
from reviewpoint.exports.attempt import ExportAttempt
from reviewpoint.exports.columns import FULL
from reviewpoint.exports.formats.csv import CsvEncoder
from reviewpoint.main import create_app
from reviewpoint.users.models import User
from reviewpoint.users.seed import seed_users
from tests.data import (
    BULK_PASSWORD,
    bearer_headers,
    create_api_key,
    execute_sql,
    insert_user,
    insert_users,
    login,
)
from tests.exports.test_export_csv import HOSTILE_NAMES

EXPORT_FULL = "/api/v1/users/export-full"
EXPORT_MINIMAL = "/api/v1/users/export"
SYNC_HEADER = [*FULL.header, "is_deleted"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Many exports per test: the rate limit is lifted (it is tested elsewhere);
    small chunks, so that syncs cross chunk boundaries."""
    return settings.model_copy(
        update={"export_rate_limit": "10000/minute", "export_chunk_rows": 50}
    )


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


@pytest.fixture
def admin(db_url: str, settings: Settings) -> dict[str, str]:
    admin_id = insert_user(db_url, "admin@example.com", name="Admin", is_admin=True)
    return bearer_headers(settings, admin_id)


def _rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def _cursor_now(client: TestClient, key: dict[str, str]) -> str:
    response = client.get(EXPORT_FULL, headers=key)
    assert response.status_code == 200, response.text
    return response.headers[cursor.HEADER]


def _sync(client: TestClient, key: dict[str, str], since: str) -> dict[str, dict[str, str]]:
    """The rows of a cursor export, by id."""
    response = client.get(EXPORT_FULL, headers=key, params={"cursor": since})
    assert response.status_code == 200, response.text
    rows = _rows(response.content)
    assert rows[0] == SYNC_HEADER
    return {row[0]: dict(zip(SYNC_HEADER, row, strict=True)) for row in rows[1:]}


def _change_seq(db_url: str, user_id: int) -> int | None:
    async def run() -> int | None:
        async with standalone_session(db_url) as session:
            return await session.scalar(select(User.change_seq).where(User.id == user_id))

    return asyncio.run(run())


# --- the cursor on every export ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (EXPORT_MINIMAL, {}),
        (EXPORT_MINIMAL, {"email": "nobody@example.com"}),
        (EXPORT_FULL, {}),
        (EXPORT_FULL, {"cursor": cursor.encode(0)}),
    ],
    ids=["minimal", "minimal-by-email", "full", "full-sync"],
)
def test_every_export_carries_a_cursor(
    client: TestClient, full_key: dict[str, str], path: str, params: dict[str, str]
) -> None:
    response = client.get(path, headers=full_key, params=params)
    assert response.status_code == 200
    assert cursor.decode(response.headers[cursor.HEADER]) >= 0


def test_cursor_is_an_opaque_versioned_token(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    token = _cursor_now(client, full_key)
    assert base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).startswith(b"v1:")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cursor_moves_only_when_users_change(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    first = _cursor_now(client, full_key)
    assert _cursor_now(client, full_key) == first
    insert_user(db_url, "new@example.com")
    assert cursor.decode(_cursor_now(client, full_key)) > cursor.decode(first)


# --- what a sync returns -----------------------------------------------------------


def test_sync_without_changes_is_just_the_header(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(db_url, [(f"u{n}@example.com", f"U {n}") for n in range(120)])
    since = _cursor_now(client, full_key)
    response = client.get(EXPORT_FULL, headers=full_key, params={"cursor": since})
    assert response.content == (",".join(SYNC_HEADER) + "\r\n").encode()
    assert response.headers[cursor.HEADER] == since


def test_sync_returns_a_created_user_and_nothing_unchanged(
    client: TestClient, db_url: str, full_key: dict[str, str], admin: dict[str, str]
) -> None:
    insert_users(db_url, [(f"u{n}@example.com", f"U {n}") for n in range(120)])
    since = _cursor_now(client, full_key)
    created = client.post(
        "/api/v1/users",
        headers=admin,
        json={"email": "new@example.com", "password": "new-password-1", "name": "New"},
    )
    assert created.status_code == 201
    rows = _sync(client, full_key, since)
    new_id = str(created.json()["id"])
    assert list(rows) == [new_id]
    assert rows[new_id]["email"] == "new@example.com"
    assert rows[new_id]["name"] == "New"
    assert rows[new_id]["is_deleted"] == "false"


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Renamed"},
        {"name": None},
        {"email": "changed@example.com"},
        {"is_active": False},
        {"is_admin": True},
        {"password": "another-password-1"},
    ],
    ids=["name", "name-cleared", "email", "deactivated", "promoted", "password"],
)
def test_sync_returns_a_changed_user(
    client: TestClient,
    db_url: str,
    full_key: dict[str, str],
    admin: dict[str, str],
    change: dict[str, object],
) -> None:
    target = insert_user(db_url, "target@example.com", name="Target")
    insert_users(db_url, [(f"u{n}@example.com", f"U {n}") for n in range(60)])
    since = _cursor_now(client, full_key)
    assert client.patch(f"/api/v1/users/{target}", headers=admin, json=change).status_code == 200
    rows = _sync(client, full_key, since)
    assert list(rows) == [str(target)]
    row = rows[str(target)]
    shown = {None: "", True: "true", False: "false"}
    for field, value in change.items():
        if field != "password":
            assert row[field] == (value if isinstance(value, str) else shown[value])
    assert row["is_deleted"] == "false"


def test_sync_returns_a_deleted_user_marked_deleted(
    client: TestClient, db_url: str, full_key: dict[str, str], admin: dict[str, str]
) -> None:
    doomed = insert_user(db_url, "doomed@example.com", name="Doomed")
    insert_users(db_url, [(f"u{n}@example.com", f"U {n}") for n in range(60)])
    since = _cursor_now(client, full_key)
    assert client.delete(f"/api/v1/users/{doomed}", headers=admin).status_code == 204
    rows = _sync(client, full_key, since)
    assert list(rows) == [str(doomed)]
    assert rows[str(doomed)]["email"] == "doomed@example.com"
    assert rows[str(doomed)]["is_active"] == "false"
    assert rows[str(doomed)]["is_deleted"] == "true"
    # A plain full export no longer has the user, and no is_deleted column.
    plain = _rows(client.get(EXPORT_FULL, headers=full_key).content)
    assert plain[0] == list(FULL.header)
    assert str(doomed) not in {row[0] for row in plain[1:]}


def test_user_created_and_deleted_between_syncs_arrives_deleted(
    client: TestClient, db_url: str, full_key: dict[str, str], admin: dict[str, str]
) -> None:
    since = _cursor_now(client, full_key)
    created = client.post(
        "/api/v1/users",
        headers=admin,
        json={"email": "brief@example.com", "password": "brief-password-1"},
    )
    user_id = created.json()["id"]
    assert client.delete(f"/api/v1/users/{user_id}", headers=admin).status_code == 204
    rows = _sync(client, full_key, since)
    assert rows[str(user_id)]["is_deleted"] == "true"


def test_sync_holds_each_changed_user_once_across_many_chunks(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(db_url, [(f"u{n}@example.com", f"U {n}") for n in range(500)])
    since = _cursor_now(client, full_key)
    # Every third user renamed in one statement: 167 rows over several 50-row chunks.
    execute_sql(db_url, "UPDATE users SET name = name || ' (renamed)' WHERE id % 3 = 0")
    rows = _sync(client, full_key, since)
    assert sorted(int(user_id) for user_id in rows) == list(range(3, 501, 3))
    assert all(row["name"].endswith(" (renamed)") for row in rows.values())


def test_sync_bytes_equal_the_reference_encoder(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    """The SQL that builds a sync's CSV (is_deleted included) matches the Python encoder."""
    since = _cursor_now(client, full_key)
    insert_users(db_url, [(f"h{n}@example.com", name) for n, name in enumerate(HOSTILE_NAMES)])
    execute_sql(db_url, "UPDATE users SET is_deleted = true WHERE id % 4 = 0")

    async def load() -> list[User]:
        async with standalone_session(db_url) as session:
            return list((await session.scalars(select(User).order_by(User.id))).all())

    spec = cursor.with_deletions(FULL)
    encoder = CsvEncoder(spec)
    users = asyncio.run(load())
    expected = encoder.header() + encoder.rows(
        {name: getattr(user, name) for name, _ in spec.columns} for user in users
    )
    response = client.get(EXPORT_FULL, headers=full_key, params={"cursor": since})
    assert response.content == expected


def test_seeded_users_arrive_in_the_next_sync(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    since = _cursor_now(client, full_key)

    async def seed() -> None:
        engine = create_engine(db_url)
        try:
            await seed_users(engine, 300)
        finally:
            await engine.dispose()

    asyncio.run(seed())
    assert len(_sync(client, full_key, since)) == 300
    assert _sync(client, full_key, _cursor_now(client, full_key)) == {}


def test_sync_excludes_changes_up_to_its_cursor(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    first = insert_user(db_url, "first@example.com")
    middle = _cursor_now(client, full_key)
    second = insert_user(db_url, "second@example.com")
    assert list(_sync(client, full_key, cursor.encode(0))) == [str(first), str(second)]
    assert list(_sync(client, full_key, middle)) == [str(second)]


# --- logins are not changes --------------------------------------------------------


def test_login_changes_neither_updated_at_nor_the_change_sequence(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    user_id = insert_user(db_url, "user@example.com")
    since = _cursor_now(client, full_key)
    before = _rows(client.get(EXPORT_FULL, headers=full_key).content)
    seq_before = _change_seq(db_url, user_id)
    login(client, "user@example.com", BULK_PASSWORD)
    assert _change_seq(db_url, user_id) == seq_before
    assert _rows(client.get(EXPORT_FULL, headers=full_key).content) == before
    assert _sync(client, full_key, since) == {}


# --- writes from any path ----------------------------------------------------------

# Columns whose change a sync must not report.
_BOOKKEEPING = {"id", "last_login_at", "change_seq"}
_NEW_VALUES = {
    "email": "'other@example.com'",
    "hashed_password": "'x'",
    "name": "'Other'",
    "is_active": "false",
    "is_admin": "true",
    "is_deleted": "true",
    "created_at": "'2001-01-01 00:00:00'",
    "updated_at": "'2001-01-01 00:00:00'",
}


def test_every_account_column_is_tracked() -> None:
    """A new column in users must be added to the triggers (a new migration) and here."""
    assert {column.name for column in User.__table__.columns} - _BOOKKEEPING == set(_NEW_VALUES)


@pytest.mark.parametrize("column", sorted(_NEW_VALUES))
def test_a_change_made_in_sql_to_any_account_column_is_synced(
    client: TestClient, db_url: str, full_key: dict[str, str], column: str
) -> None:
    user_id = insert_user(db_url, "user@example.com", name="User")
    insert_user(db_url, "bystander@example.com")
    since = _cursor_now(client, full_key)
    execute_sql(db_url, f"UPDATE users SET {column} = {_NEW_VALUES[column]} WHERE id = {user_id}")
    assert list(_sync(client, full_key, since)) == [str(user_id)]


def test_an_update_that_changes_nothing_is_not_synced(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    user_id = insert_user(db_url, "user@example.com", name="User")
    since = _cursor_now(client, full_key)
    execute_sql(
        db_url, f"UPDATE users SET name = 'User', last_login_at = created_at WHERE id = {user_id}"
    )
    assert _sync(client, full_key, since) == {}


# --- refusals ----------------------------------------------------------------------


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not a cursor",
        "12345",
        _token(b"v2:5"),
        _token(b"v1:"),
        _token(b"v1:-1"),
        _token(b"v1:01"),
        _token(b"v1:5 "),
        _token(b"v1:" + str(2**63).encode()),
        _token(b"\xff\xfe"),
        "A" * 200,
    ],
    ids=lambda value: repr(value)[:20],
)
def test_an_invalid_cursor_is_422_naming_it(
    client: TestClient, full_key: dict[str, str], value: str
) -> None:
    response = client.get(EXPORT_FULL, headers=full_key, params={"cursor": value})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "cursor"]
    assert cursor.HEADER in error["msg"]


def test_a_cursor_ahead_of_the_database_is_409(
    client: TestClient, full_key: dict[str, str]
) -> None:
    current = cursor.decode(_cursor_now(client, full_key))
    response = client.get(
        EXPORT_FULL, headers=full_key, params={"cursor": cursor.encode(current + 1)}
    )
    assert response.status_code == 409
    assert "full export" in response.json()["detail"]


def test_the_minimal_export_refuses_a_cursor_with_400(
    client: TestClient, full_key: dict[str, str]
) -> None:
    response = client.get(EXPORT_MINIMAL, headers=full_key, params={"cursor": cursor.encode(0)})
    assert response.status_code == 400
    assert "export-full" in response.json()["detail"]


def test_a_sync_needs_the_full_export_scope(client: TestClient, db_url: str) -> None:
    minimal_key = {"X-API-Key": create_api_key(db_url, ["users:export"])[1]}
    response = client.get(EXPORT_FULL, headers=minimal_key, params={"cursor": cursor.encode(0)})
    assert response.status_code == 403


def test_a_sync_without_credentials_is_401_not_a_cursor_error(client: TestClient) -> None:
    assert client.get(EXPORT_MINIMAL, params={"cursor": "x"}).status_code == 401
    assert client.get(EXPORT_FULL, params={"cursor": cursor.encode(0)}).status_code == 401


class _Outcomes:
    """An export observer that keeps how each attempt ended."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []
        self.filters: list[dict[str, str]] = []

    async def started(self, attempt: ExportAttempt) -> None:
        pass

    async def finished(self, attempt: ExportAttempt) -> None:
        self.seen.append((attempt.outcome, attempt.status))
        self.filters.append(attempt.filters)


def test_refused_cursors_are_recorded_as_invalid_attempts_with_their_cursor(
    settings: Settings, full_key: dict[str, str]
) -> None:
    outcomes = _Outcomes()
    app = create_app(settings)
    with TestClient(app) as client:
        # After start-up, which installs the app's own observers.
        app.state.export_observers.append(outcomes)
        current = cursor.decode(_cursor_now(client, full_key))
        for value in ("bad", cursor.encode(current + 1)):
            client.get(EXPORT_FULL, headers=full_key, params={"cursor": value})
        client.get(EXPORT_MINIMAL, headers=full_key, params={"cursor": cursor.encode(0)})
    refused = [("invalid", 422), ("invalid", 409), ("invalid", 400)]
    assert outcomes.seen == [("completed", 200), *refused]
    assert outcomes.filters[1] == {"cursor": "bad"}


# --- documentation -----------------------------------------------------------------


@pytest.fixture
def openapi(settings: Settings) -> Iterator[dict[str, object]]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client.get("/openapi.json").json()


def test_openapi_documents_the_cursor_parameter_and_header(openapi: dict[str, object]) -> None:
    paths = openapi["paths"]
    assert isinstance(paths, dict)
    full = paths[EXPORT_FULL]["get"]
    [parameter] = [p for p in full["parameters"] if p["name"] == "cursor"]
    assert "X-Export-Cursor" in parameter["description"]
    assert set(full["responses"]) >= {"200", "409", "422"}
    for path in (EXPORT_FULL, EXPORT_MINIMAL):
        assert cursor.HEADER in paths[path]["get"]["responses"]["200"]["headers"]
