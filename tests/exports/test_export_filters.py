"""Filters, applied in SQL on both exports: each selects exactly the users a Python filter does.

The users vary in every filtered column; each case's export is compared with
the same filter written in Python over the table, with tiny chunks read by
several connections (PostgreSQL) so that `limit` is kept across chunk ends and
readers. `X-Export-Rows` must equal the records received.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reviewpoint.config import Settings
from reviewpoint.db import standalone_session
from reviewpoint.main import create_app
from reviewpoint.users.models import User
from tests.data import BULK_PASSWORD, create_api_key

EXPORT = "/api/v1/users/export"
EXPORT_FULL = "/api/v1/users/export-full"
START = datetime(2025, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)
USERS = 60


def _moment(index: int) -> datetime:
    return START + timedelta(hours=index)


def _insert_varied_users(db_url: str) -> None:
    rows = [
        {
            "email": f"User{i}@Example.com",
            "name": None if i % 4 == 0 else f'User, {i}\n"quoted"',
            "hashed_password": "x" + BULK_PASSWORD,
            "is_active": i % 3 != 0,
            "is_admin": i % 10 == 0,
            "is_deleted": i % 11 == 5,
            # Out of id order, so a time filter cannot pass for an id range.
            "created_at": _moment((i * 7) % USERS),
            "updated_at": _moment((i * 7) % USERS) + timedelta(days=i % 5),
        }
        for i in range(USERS)
    ]

    async def run() -> None:
        async with standalone_session(db_url) as session:
            session.add_all(User(**row) for row in rows)

    asyncio.run(run())


def _all_users(db_url: str) -> list[User]:
    async def load() -> list[User]:
        async with standalone_session(db_url) as session:
            return list((await session.scalars(select(User).order_by(User.id))).all())

    return asyncio.run(load())


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


@pytest.fixture
def tiny_chunks(settings: Settings) -> TestClient:
    """Chunks of three rows, read by three connections at once where the database can."""
    app = create_app(settings.model_copy(update={"export_chunk_rows": 3, "export_connections": 3}))
    return TestClient(app)


def _ids(format_name: str, body: bytes) -> list[int]:
    if format_name == "csv":
        return [int(row[0]) for row in list(csv.reader(io.StringIO(body.decode(), newline="")))[1:]]
    if format_name == "ndjson":
        return [json.loads(line)["id"] for line in body.decode().splitlines()]
    if format_name == "json":
        return [record["id"] for record in json.loads(body)]
    sheet = openpyxl.load_workbook(io.BytesIO(body)).active
    assert sheet is not None
    return [int(str(row[0])) for row in sheet.iter_rows(min_row=2, values_only=True)]


Selects = Callable[[User], bool]
T10 = _moment(10)
T30 = _moment(30)
T10_AT_PLUS_2 = T10.astimezone(timezone(timedelta(hours=2))).isoformat()
CASES: dict[str, tuple[dict[str, str], Selects, int | None]] = {
    "none": ({}, lambda u: True, None),
    "active": ({"is_active": "true"}, lambda u: u.is_active, None),
    "inactive": ({"is_active": "false"}, lambda u: not u.is_active, None),
    "admins": ({"is_admin": "1"}, lambda u: u.is_admin, None),
    "not admins": ({"is_admin": "no"}, lambda u: not u.is_admin, None),
    "created after (strictly)": (
        {"created_after": T10.isoformat()},
        lambda u: u.created_at > T10,
        None,
    ),
    "created after, other zone": (
        {"created_after": T10_AT_PLUS_2},
        lambda u: u.created_at > T10,
        None,
    ),
    "created before (strictly)": (
        {"created_before": T30.isoformat().replace("+00:00", "Z")},
        lambda u: u.created_at < T30,
        None,
    ),
    "updated since (inclusive)": (
        {"updated_since": T30.isoformat()},
        lambda u: u.updated_at >= T30,
        None,
    ),
    "email, any case": (
        {"email": "user7@EXAMPLE.COM"},
        lambda u: u.email == "User7@Example.com",
        None,
    ),
    "limit": ({"limit": "7"}, lambda u: True, 7),
    "limit above the count": ({"limit": "1000"}, lambda u: True, 1000),
    "one row": ({"limit": "1"}, lambda u: True, 1),
    "after id": ({"after_id": "20"}, lambda u: u.id > 20, None),
    "after the last id": ({"after_id": "1000"}, lambda u: False, None),
    "a time window of active non-admins": (
        {
            "is_active": "true",
            "is_admin": "false",
            "created_after": T10.isoformat(),
            "created_before": T30.isoformat(),
        },
        lambda u: u.is_active and not u.is_admin and T10 < u.created_at < T30,
        None,
    ),
    "resume with a limit": ({"after_id": "12", "limit": "9"}, lambda u: u.id > 12, 9),
    "updated admins, limited": (
        {"updated_since": T10.isoformat(), "is_admin": "false", "limit": "5"},
        lambda u: u.updated_at >= T10 and not u.is_admin,
        5,
    ),
}


def _expected(db_url: str, selects: Selects, limit: int | None) -> list[int]:
    ids = [user.id for user in _all_users(db_url) if not user.is_deleted and selects(user)]
    return ids if limit is None else ids[:limit]


# Tiny chunks walk ids across many chunks and readers; one chunk is how SQLite
# serves a time-filtered export its count says is small (by the time index).
@pytest.mark.parametrize("chunk_rows", [3, 1000], ids=["tiny-chunks", "one-chunk"])
@pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL], ids=["minimal", "full"])
@pytest.mark.parametrize("case", list(CASES))
def test_filters_select_exactly_the_matching_users(
    settings: Settings,
    db_url: str,
    full_key: dict[str, str],
    case: str,
    path: str,
    chunk_rows: int,
) -> None:
    _insert_varied_users(db_url)
    params, selects, limit = CASES[case]
    expected = _expected(db_url, selects, limit)
    changes = {"export_chunk_rows": chunk_rows, "export_connections": 3}
    with TestClient(create_app(settings.model_copy(update=changes))) as client:
        response = client.get(path, params=params, headers=full_key)
    assert response.status_code == 200, response.text
    assert _ids("csv", response.content) == expected
    assert response.headers["X-Export-Rows"] == str(len(expected))


@pytest.mark.parametrize("format_name", ["csv", "ndjson", "json", "xlsx"])
@pytest.mark.parametrize(
    "case", ["a time window of active non-admins", "resume with a limit", "limit", "none"]
)
def test_filters_and_row_count_hold_in_every_format(
    tiny_chunks: TestClient,
    db_url: str,
    full_key: dict[str, str],
    case: str,
    format_name: str,
) -> None:
    _insert_varied_users(db_url)
    params, selects, limit = CASES[case]
    expected = _expected(db_url, selects, limit)
    with tiny_chunks as client:
        response = client.get(
            EXPORT_FULL, params={**params, "format": format_name}, headers=full_key
        )
    assert response.status_code == 200, response.text
    assert _ids(format_name, response.content) == expected
    assert response.headers["X-Export-Rows"] == str(len(expected))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("created_after", "2025-01-08T10:30:00", "has no time zone"),
        ("created_after", "2025-01-08", "has no time zone"),
        ("created_before", "1700000000", "must be an ISO 8601 timestamp"),
        ("created_before", "yesterday", "must be an ISO 8601 timestamp"),
        # An unencoded `+` arrives as a space.
        ("updated_since", "2025-01-08T10:30:00 02:00", "must be an ISO 8601 timestamp"),
        ("updated_since", "0001-01-01T00:00:00+01:00", "is out of range"),
        ("is_active", "maybe", "valid boolean"),
        ("is_admin", "2", "valid boolean"),
        ("after_id", "-1", "greater than or equal to 0"),
        ("after_id", "2147483648", "less than or equal to 2147483647"),
        ("after_id", "first", "valid integer"),
        ("limit", "0", "greater than or equal to 1"),
        ("limit", "ten", "valid integer"),
    ],
)
@pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL], ids=["minimal", "full"])
def test_invalid_filter_values_are_422_naming_the_parameter(
    client: TestClient, full_key: dict[str, str], path: str, name: str, value: str, message: str
) -> None:
    response = client.get(path, params={name: value}, headers=full_key)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert set(error) == {"loc", "msg", "type"}  # never echoes the input
    assert error["loc"] == ["query", name]
    assert message in error["msg"]


def test_timestamps_with_an_offset_and_with_z_select_the_same_users(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    _insert_varied_users(db_url)
    in_z = T10.isoformat().replace("+00:00", "Z")
    bodies = {
        client.get(EXPORT, params={"created_after": moment}, headers=full_key).content
        for moment in (in_z, T10_AT_PLUS_2, T10.isoformat())
    }
    assert len(bodies) == 1
