"""The two pools: how connections are split, and what a request sees when none is free."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reviewpoint.config import Settings, SettingsError, load_settings
from reviewpoint.main import create_app
from tests.conftest import BACKENDS
from tests.data import BULK_PASSWORD, create_api_key, insert_user, login

PG = "postgresql+asyncpg://u@127.0.0.1:5432/db"
CPUS = os.cpu_count() or 1


def _settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {"env": "test", "db_url": db_url, "log_level": "error"}
    return load_settings(_env_file=None, **{**values, **overrides})


@pytest.mark.parametrize(
    ("db_url", "overrides", "slots", "request_connections"),
    [
        # PostgreSQL exports hold REVIEWPOINT_EXPORT_CONNECTIONS (2) each.
        (PG, {}, 3, 4),
        (PG, {"export_connections": 1}, 6, 4),
        (PG, {"db_pool_size": 20}, 8, 4),
        (PG, {"export_max_concurrent": 2}, 2, 6),
        # SQLite exports read on one connection, in this process: one per core at most.
        ("sqlite+aiosqlite:///x.db", {}, min(6, CPUS), 10 - min(6, CPUS)),
        ("sqlite+aiosqlite:///x.db", {"export_max_concurrent": 5}, 5, 5),
        ("sqlite+aiosqlite:///x.db", {"db_pool_size": 4}, 1, 3),
    ],
    # Not the URLs: CI counts test ids naming postgresql as PostgreSQL tests.
    ids=[
        "pg",
        "pg-one-connection",
        "pg-pool-20",
        "pg-cap-2",
        "sqlite",
        "sqlite-cap-5",
        "sqlite-pool-4",
    ],
)
def test_exports_get_what_the_pool_holds_beyond_the_requests_share(
    db_url: str, overrides: dict[str, object], slots: int, request_connections: int
) -> None:
    settings = _settings(db_url, **overrides)
    assert settings.export_slots == slots
    export_pool = slots * settings.connections_per_export
    assert settings.db_pool_size - export_pool == request_connections


def test_a_cap_that_leaves_requests_too_few_connections_is_refused_at_start() -> None:
    with pytest.raises(SettingsError) as error:
        _settings(PG, export_max_concurrent=5)  # 5 x 2 of 10 leaves none
    message = str(error.value)
    assert "REVIEWPOINT_DB_POOL_SIZE=10" in message
    assert "REVIEWPOINT_EXPORT_MAX_CONCURRENT" in message
    assert "\n" not in message


@pytest.mark.timing
def test_a_request_that_finds_no_free_connection_gets_503_with_retry_after(
    db_url: str,
) -> None:
    insert_user(db_url, "admin@example.com", is_admin=True)
    settings = _settings(db_url, db_pool_timeout=0.3)
    with TestClient(create_app(settings)) as client:
        admin = login(client, "admin@example.com", BULK_PASSWORD)
        engine = client.app.state.database.engine  # type: ignore[attr-defined]
        held: list[AsyncConnection] = []

        async def take_all() -> None:
            for _ in range(engine.pool.size()):
                held.append(await engine.connect())

        async def give_back() -> None:
            for connection in held:
                await connection.close()

        client.portal.call(take_all)  # type: ignore[union-attr]
        try:
            started = time.monotonic()
            response = client.get("/api/v1/users", headers=admin)
            # Under the 5 s default: the configured 0.3 s applies. Not tighter:
            # one loaded full-suite run (a 1 GB pytest process) took 4.5 s here.
            assert time.monotonic() - started < 4.9
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "2"
            assert response.json() == {
                "detail": "Server busy: no database connection free; retry shortly"
            }
        finally:
            client.portal.call(give_back)  # type: ignore[union-attr]
        assert client.get("/api/v1/users", headers=admin).status_code == 200


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    """SQLite only: its write lock is what these tests are about."""
    path = tmp_path / "locked.db"
    shutil.copy(sqlite_template, path)
    yield f"sqlite+aiosqlite:///{path}"


@pytest.mark.timing
def test_reads_and_exports_do_not_wait_for_the_sqlite_write_lock(sqlite_url: str) -> None:
    insert_user(sqlite_url, "admin@example.com", is_admin=True)
    key = {"X-API-Key": create_api_key(sqlite_url, ["users:export_full"])[1]}
    with TestClient(create_app(_settings(sqlite_url))) as client:
        admin = login(client, "admin@example.com", BULK_PASSWORD)
        writer = sqlite3.connect(sqlite_url.removeprefix("sqlite+aiosqlite:///"))
        writer.isolation_level = None
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            for path, headers in (
                ("/api/v1/users", admin),
                ("/api/v1/auth/me", admin),
                ("/api/v1/api-keys", admin),
                ("/api/v1/users/export-full", key),
            ):
                started = time.monotonic()
                response = client.get(path, headers=headers)
                assert response.status_code == 200, (path, response.text)
                assert time.monotonic() - started < 1.0, path
        finally:
            writer.execute("ROLLBACK")
            writer.close()


@pytest.mark.parametrize(
    "db_url", [backend for backend in BACKENDS if backend == "postgresql"], indirect=True
)
def test_postgresql_sessions_carry_timeouts_suited_to_their_use(db_url: str) -> None:
    settings = _settings(db_url, export_max_seconds=120)
    with TestClient(create_app(settings)) as client:
        database = client.app.state.database  # type: ignore[attr-defined]

        async def shown(engine: AsyncEngine) -> tuple[str, str]:
            async with engine.connect() as connection:
                statement = await connection.scalar(text("SHOW statement_timeout"))
                idle = await connection.scalar(text("SHOW idle_in_transaction_session_timeout"))
                return str(statement), str(idle)

        requests = client.portal.call(shown, database.engine)  # type: ignore[union-attr]
        exports = client.portal.call(shown, database.export_engine)  # type: ignore[union-attr]
    # Requests are index lookups; an export chunk is one COPY, and a snapshot
    # never idles past the export's own limit (plus a minute).
    assert requests == ("15s", "30s")
    assert exports == ("5min", "3min")


def test_an_unreachable_rate_limit_store_is_503_with_retry_after_not_a_free_pass(
    db_url: str,
) -> None:
    insert_user(db_url, "admin@example.com", is_admin=True)
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    # Nothing listens on port 1: Redis refuses at once, as when it is down.
    settings = _settings(db_url, rate_limit_storage="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        for response in (
            client.get("/api/v1/users/export-full", headers=key),
            client.post(
                "/api/v1/auth/login",
                data={"username": "admin@example.com", "password": BULK_PASSWORD},
            ),
        ):
            assert response.status_code == 503
            assert response.json() == {"detail": "Rate limit store unavailable"}
            assert response.headers["Retry-After"] == "5"
        # Everything that is not limited still answers.
        assert client.get("/api/v1/health/ready").status_code == 200
