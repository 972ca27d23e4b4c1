"""`fields=` on the full export: which columns, in which order, in every format."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from reviewpoint.db import standalone_session
from reviewpoint.exports.columns import CHOOSABLE
from reviewpoint.users.models import User
from tests.data import create_api_key, insert_users

EXPORT_FULL = "/api/v1/users/export-full"
ALLOWED = (
    "Allowed: id, email, name, created_at, updated_at, is_active, is_admin, "
    "last_login_at, is_deleted."
)
LOGIN = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


def _log_in_first_user(db_url: str) -> None:
    async def run() -> None:
        async with standalone_session(db_url) as session:
            first = await session.scalar(User.__table__.select().with_only_columns(User.id))
            await session.execute(update(User).where(User.id == first).values(last_login_at=LOGIN))

    asyncio.run(run())


def _get(client: TestClient, key: dict[str, str], **params: str) -> bytes:
    response = client.get(EXPORT_FULL, params=params, headers=key)
    assert response.status_code == 200, response.text
    return response.content


def _csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def test_fields_pick_and_order_the_columns(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(db_url, [("a@example.com", "A")], created_at=LOGIN)
    rows = _csv(_get(client, full_key, fields="created_at,email,id"))
    assert rows[0] == ["created_at", "email", "id"]
    assert rows[1][:2] == ["2025-03-04T05:06:07Z", "a@example.com"]
    assert rows[1][2].isdigit()


def test_last_login_and_deleted_columns_in_every_format(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(db_url, [("a@example.com", "A"), ("b@example.com", "B")])
    _log_in_first_user(db_url)
    fields = "email,last_login_at,is_deleted"

    assert _csv(_get(client, full_key, fields=fields)) == [
        ["email", "last_login_at", "is_deleted"],
        ["a@example.com", "2025-03-04T05:06:07Z", "false"],
        ["b@example.com", "", "false"],
    ]
    expected = [
        {"email": "a@example.com", "last_login_at": "2025-03-04T05:06:07Z", "is_deleted": False},
        {"email": "b@example.com", "last_login_at": None, "is_deleted": False},
    ]
    lines = _get(client, full_key, fields=fields, format="ndjson").decode().splitlines()
    assert [json.loads(line) for line in lines] == expected
    assert json.loads(_get(client, full_key, fields=fields, format="json")) == expected
    # Key order follows `fields` too.
    assert list(json.loads(lines[0])) == ["email", "last_login_at", "is_deleted"]

    workbook = openpyxl.load_workbook(
        io.BytesIO(_get(client, full_key, fields=fields, format="xlsx"))
    )
    assert workbook.active is not None
    assert list(workbook.active.iter_rows(values_only=True)) == [
        ("email", "last_login_at", "is_deleted"),
        ("a@example.com", datetime(2025, 3, 4, 5, 6, 7), False),
        ("b@example.com", None, False),
    ]


def test_every_choosable_field_can_be_exported_alone(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(db_url, [("a@example.com", None)])
    for name in CHOOSABLE:
        for format_name in ("csv", "ndjson"):
            body = _get(client, full_key, fields=name, format=format_name)
            assert name in body.decode()


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ("id,password", f"Unknown field 'password' in 'fields'. {ALLOWED}"),
        ("id,hashed_password", f"Unknown field 'hashed_password' in 'fields'. {ALLOWED}"),
        ("ID", f"Unknown field 'ID' in 'fields'. {ALLOWED}"),
        ("id,,email", f"Unknown field '' in 'fields'. {ALLOWED}"),
        ("", f"Unknown field '' in 'fields'. {ALLOWED}"),
        ("email,id,email", f"Field 'email' appears twice in 'fields'. {ALLOWED}"),
    ],
)
def test_unknown_or_repeated_fields_are_400_naming_them(
    client: TestClient, full_key: dict[str, str], fields: str, detail: str
) -> None:
    response = client.get(EXPORT_FULL, params={"fields": fields}, headers=full_key)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


def test_spaces_around_field_names_are_ignored(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(db_url, [("a@example.com", "A")])
    assert _csv(_get(client, full_key, fields=" email , name "))[0] == ["email", "name"]


@pytest.mark.parametrize("fields", ["id,email", "", "password"])
def test_fields_on_the_minimal_export_is_a_400_not_ignored(
    client: TestClient, db_url: str, fields: str
) -> None:
    key = {"X-API-Key": create_api_key(db_url, ["users:export"])[1]}
    response = client.get("/api/v1/users/export", params={"fields": fields}, headers=key)
    assert response.status_code == 400
    assert response.json() == {
        "detail": "fields is accepted only by /api/v1/users/export-full "
        "(the minimal export always has id,email,name)"
    }
