"""One email rule on both databases: case folds for ASCII letters only.

`Ops@example.com` and `ops@example.com` are one address; `Ärger@example.com` and
`ärger@example.com` are two. Uniqueness, login, the export's `email` filter and
email changes all follow it, and lookups use the unique index that enforces it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tests.conftest import statements_sent
from tests.data import admin_headers, create_api_key, create_user, insert_user

USERS = "/api/v1/users"
EXPORT = "/api/v1/users/export"
LOGIN = "/api/v1/auth/login"


@pytest.fixture
def admin(client: TestClient, db_url: str) -> dict[str, str]:
    return admin_headers(client, db_url)


@pytest.fixture
def export_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export"])[1]}


def _create(client: TestClient, headers: dict[str, str], email: str) -> Any:
    return client.post(USERS, json={"email": email, "password": "a-password-1"}, headers=headers)


def _exported_emails(client: TestClient, headers: dict[str, str], email: str) -> list[str]:
    response = client.get(EXPORT, params={"email": email}, headers=headers)
    assert response.status_code == 200
    records = response.content.decode().split("\r\n")
    assert records[0] == "id,email,name"
    return [record.split(",")[1] for record in records[1:] if record]


def _login_status(client: TestClient, email: str, password: str) -> int:
    return client.post(LOGIN, data={"username": email, "password": password}).status_code


# Uniqueness


def test_emails_differing_in_non_ascii_case_are_two_users(
    client: TestClient, admin: dict[str, str]
):
    first = _create(client, admin, "Ärger@example.com")
    second = _create(client, admin, "ärger@example.com")
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["email"] == "ärger@example.com"


def test_emails_differing_in_ascii_case_are_one_address_409(
    client: TestClient, admin: dict[str, str]
):
    assert _create(client, admin, "Ops@Example.com").status_code == 201
    response = _create(client, admin, "ops@example.com")
    assert response.status_code == 409
    assert response.json() == {"detail": "A user with this email already exists"}


def test_non_ascii_letters_in_equal_case_are_still_one_address_409(
    client: TestClient, admin: dict[str, str]
):
    assert _create(client, admin, "Ärger@example.com").status_code == 201
    assert _create(client, admin, "ÄRGER@example.com").status_code == 409


@pytest.mark.parametrize(
    ("new_email", "status"),
    [("Ärger@example.com", 200), ("äRGER@example.com", 409)],
    ids=["non-ascii-case-differs", "ascii-case-differs"],
)
def test_changing_an_email_follows_the_rule(
    client: TestClient, db_url: str, admin: dict[str, str], new_email: str, status: int
):
    insert_user(db_url, "ärger@example.com")
    user_id = insert_user(db_url, "other@example.com")
    response = client.patch(f"{USERS}/{user_id}", json={"email": new_email}, headers=admin)
    assert response.status_code == status
    expected = new_email if status == 200 else "other@example.com"
    assert client.get(f"{USERS}/{user_id}", headers=admin).json()["email"] == expected


# Login


def test_login_folds_ascii_case(client: TestClient, db_url: str):
    create_user(db_url, "Ops@example.com", password="ops-password-1")
    assert _login_status(client, "oPS@EXAMPLE.COM", "ops-password-1") == 200


def test_login_keeps_non_ascii_case(client: TestClient, db_url: str):
    create_user(db_url, "Ärger@example.com", password="arger-password-1")
    assert _login_status(client, "ärger@example.com", "arger-password-1") == 401
    assert _login_status(client, "ÄRGER@example.com", "arger-password-1") == 200


def test_login_finds_each_of_two_non_ascii_case_variants(client: TestClient, db_url: str):
    create_user(db_url, "Ärger@example.com", password="upper-password-1")
    create_user(db_url, "ärger@example.com", password="lower-password-1")
    assert _login_status(client, "Ärger@example.com", "upper-password-1") == 200
    assert _login_status(client, "ärger@example.com", "lower-password-1") == 200
    assert _login_status(client, "ärger@example.com", "upper-password-1") == 401


# The export's email filter


def test_export_email_filter_folds_ascii_case(
    client: TestClient, db_url: str, export_key: dict[str, str]
):
    insert_user(db_url, "Ops@example.com")
    assert _exported_emails(client, export_key, "oPS@example.COM") == ["Ops@example.com"]


def test_export_email_filter_keeps_non_ascii_case(
    client: TestClient, db_url: str, export_key: dict[str, str]
):
    insert_user(db_url, "Ärger@example.com")
    insert_user(db_url, "ärger@example.com")
    assert _exported_emails(client, export_key, "ÄRGER@example.com") == ["Ärger@example.com"]
    assert _exported_emails(client, export_key, "ärger@EXAMPLE.com") == ["ärger@example.com"]
    assert _exported_emails(client, export_key, "äRGER@example.com") == ["ärger@example.com"]


# The lookups use the unique index


@pytest.fixture
def email_queries(client: TestClient) -> Iterator[list[tuple[str, Any]]]:
    """The SQL (and its parameters) of every email lookup the app runs."""
    with statements_sent(
        client.app, keep=lambda statement: "lower(" in statement and "email" in statement
    ) as sent:
        yield sent


def _plan(db_url: str, statement: str, parameters: Any) -> str:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database or "") as connection:
            rows = connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
        return "\n".join(str(row[-1]) for row in rows)

    async def run() -> str:
        connection = await asyncpg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            # A handful of rows would rightly be read by a sequential scan.
            await connection.execute("SET enable_seqscan = off")
            rows = await connection.fetch(f"EXPLAIN {statement}", *parameters)
            return "\n".join(row[0] for row in rows)
        finally:
            await connection.close()

    return asyncio.run(run())


def test_login_lookup_uses_the_unique_email_index(
    client: TestClient, db_url: str, email_queries: list[tuple[str, Any]]
):
    insert_user(db_url, "Ops@example.com")
    assert _login_status(client, "ops@example.com", "wrong-password") == 401
    assert email_queries, "no email lookup was run"
    for statement, parameters in email_queries:
        assert "uq_users_email_lower" in _plan(db_url, statement, parameters), statement


def test_export_email_filter_uses_the_unique_email_index(
    client: TestClient,
    db_url: str,
    export_key: dict[str, str],
    email_queries: list[tuple[str, Any]],
):
    insert_user(db_url, "Ops@example.com")
    assert _exported_emails(client, export_key, "ops@example.com") == ["Ops@example.com"]
    # The key's lookup does not touch emails; what is left is the export's filter
    # (the chunk-end query; on PostgreSQL the rows come by COPY, whose WHERE is the
    # same text with the address inlined).
    assert email_queries, "the export ran no email-filtered query through SQLAlchemy"
    for statement, parameters in email_queries:
        assert "uq_users_email_lower" in _plan(db_url, statement, parameters), statement
