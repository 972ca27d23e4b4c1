"""REVIEWPOINT_EXPORT_DB_URL: exports read a replica, everything else the primary.

The "replica" is a second real database of the same kind holding other rows, so
where each request read is visible in what it answers.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings, SettingsError, load_settings
from reviewpoint.main import create_app
from tests.conftest import migrated_database
from tests.data import bearer_headers, create_api_key, insert_user, insert_users

READY = "/api/v1/health/ready"
EXPORT = "/api/v1/users/export"
USERS = "/api/v1/users"


def _kind(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def replica_url(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> Iterator[str]:
    """A second migrated database of the primary's kind."""
    with migrated_database(request, tmp_path, _kind(db_url), "replica.db") as url:
        yield url


def _unreachable(db_url: str, tmp_path: Path) -> str:
    if _kind(db_url) == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'replica.db'}"
    # Port 1 (tcpmux) is privileged and unused: the connection is refused at once.
    return "postgresql+asyncpg://postgres@127.0.0.1:1/replica"


def _settings(db_url: str, export_db_url: str | None) -> Settings:
    return load_settings(
        _env_file=None,
        env="test",
        db_url=db_url,
        export_db_url=export_db_url,
        log_level="warning",
        jwt_secret_key=secrets.token_urlsafe(32),
    )


def _emails(csv_text: str) -> list[str]:
    return [row[1] for row in list(csv.reader(io.StringIO(csv_text, newline="")))[1:]]


def test_exports_read_the_replica_while_the_user_api_reads_the_primary(
    db_url: str, replica_url: str
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    insert_users(db_url, [("primary.only@example.com", "On the primary")])
    insert_users(
        replica_url, [("replica.one@example.com", "Lagging"), ("replica.two@example.com", None)]
    )
    # Credentials live on the primary, as every write does.
    _, secret = create_api_key(db_url, ["users:export"])
    settings = _settings(db_url, replica_url)
    admin = bearer_headers(settings, admin_id)
    with TestClient(create_app(settings)) as client:
        by_key = client.get(EXPORT, headers={"X-API-Key": secret})
        by_admin = client.get(EXPORT, headers=admin)
        one = client.get(EXPORT, params={"email": "REPLICA.TWO@example.com"}, headers=admin)
        users = client.get(USERS, headers=admin)
    assert by_key.status_code == 200, by_key.text
    assert _emails(by_key.text) == ["replica.one@example.com", "replica.two@example.com"]
    assert by_admin.text == by_key.text
    assert _emails(one.text) == ["replica.two@example.com"]
    assert users.status_code == 200
    assert [user["email"] for user in users.json()["data"]] == [
        "admin@example.com",
        "primary.only@example.com",
    ]


def test_without_a_replica_exports_read_the_primary(db_url: str) -> None:
    insert_users(db_url, [("primary.only@example.com", None)])
    _, secret = create_api_key(db_url, ["users:export"])
    with TestClient(create_app(_settings(db_url, None))) as client:
        response = client.get(EXPORT, headers={"X-API-Key": secret})
    assert _emails(response.text) == ["primary.only@example.com"]


def test_readiness_is_200_when_the_primary_and_the_replica_answer(
    db_url: str, replica_url: str
) -> None:
    with TestClient(create_app(_settings(db_url, replica_url))) as client:
        response = client.get(READY)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_an_unreachable_replica_makes_readiness_and_exports_503_but_not_the_rest(
    db_url: str, tmp_path: Path
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    _, secret = create_api_key(db_url, ["users:export"])
    settings = _settings(db_url, _unreachable(db_url, tmp_path))
    with TestClient(create_app(settings)) as client:
        ready = client.get(READY)
        export = client.get(EXPORT, headers={"X-API-Key": secret})
        users = client.get(USERS, headers=bearer_headers(settings, admin_id))
    assert (ready.status_code, ready.json()) == (503, {"detail": "Export replica unreachable"})
    assert "Retry-After" in ready.headers
    assert export.status_code == 503, export.text
    assert "Retry-After" in export.headers
    assert users.status_code == 200


def test_readiness_names_both_when_the_primary_and_the_replica_are_down(tmp_path: Path) -> None:
    down = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'primary.db'}"
    replica = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'replica.db'}"
    with TestClient(create_app(_settings(down, replica))) as client:
        response = client.get(READY)
    assert (response.status_code, response.json()) == (
        503,
        {"detail": "Database and export replica unreachable"},
    )


@pytest.mark.parametrize(
    ("primary", "replica"),
    [
        # ids free of "postgresql": conftest counts those as PostgreSQL tests
        pytest.param(
            "sqlite+aiosqlite:///./a.db", "postgresql+asyncpg://h/db", id="sqlite-with-pg-replica"
        ),
        pytest.param(
            "postgresql+asyncpg://h/db", "sqlite+aiosqlite:///./a.db", id="pg-with-sqlite-replica"
        ),
        pytest.param("sqlite+aiosqlite:///./a.db", "sqlite:///./b.db", id="sync-driver"),
        pytest.param("sqlite+aiosqlite:///./a.db", "mysql://root@h/db", id="mysql"),
    ],
)
def test_a_replica_url_of_another_kind_or_driver_is_refused_naming_the_setting(
    primary: str, replica: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, env="test", db_url=primary, export_db_url=replica)
    message = str(refused.value)
    assert "REVIEWPOINT_EXPORT_DB_URL" in message
    assert len(message.splitlines()) == 1
