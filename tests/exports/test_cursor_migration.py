"""Migration 0005 (the change sequence): upgrade over existing users, downgrade, upgrade again."""

from __future__ import annotations

import asyncio
import warnings

from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import SAWarning

from reviewpoint.db import create_engine
from reviewpoint.migrations import alembic_config, upgrade
from tests.data import execute_sql, insert_user, insert_users


def _rows(db_url: str, sql: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                return [tuple(row) for row in await connection.execute(text(sql))]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _schema(db_url: str) -> tuple[set[str], set[str], set[str]]:
    """Tables, users' columns and users' indexes."""

    async def run() -> tuple[set[str], set[str], set[str]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:

                def read(sync: object) -> tuple[set[str], set[str], set[str]]:
                    inspector = inspect(sync)
                    # SQLite: the email index is an expression, which reflection skips.
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", SAWarning)
                        indexes = inspector.get_indexes("users")
                    return (
                        set(inspector.get_table_names()),
                        {column["name"] for column in inspector.get_columns("users")},
                        {str(index["name"]) for index in indexes},
                    )

                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _triggers(db_url: str) -> set[str]:
    if db_url.startswith("postgresql"):
        sql = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'users'"
    return {str(name) for (name,) in _rows(db_url, sql)}


def test_upgrade_numbers_existing_users_and_the_counter_continues_after_them(
    db_url: str,
) -> None:
    command.downgrade(alembic_config(db_url), "0004")
    insert_users(db_url, [(f"u{n}@example.com", f"U {n}") for n in range(5)])
    execute_sql(db_url, "UPDATE users SET is_deleted = true WHERE id = 2")

    upgrade(db_url)

    assert _rows(db_url, "SELECT id, change_seq FROM users ORDER BY id") == [
        (n, n) for n in range(1, 6)
    ]
    assert _rows(db_url, "SELECT id, value FROM change_counter") == [(1, 5)]
    new_id = insert_user(db_url, "new@example.com")
    [(new_seq,)] = _rows(db_url, f"SELECT change_seq FROM users WHERE id = {new_id}")
    assert isinstance(new_seq, int) and new_seq > 5
    assert "ix_users_change_seq" in _schema(db_url)[2]


def test_downgrade_removes_the_sequence_and_writes_still_work(db_url: str) -> None:
    assert _triggers(db_url)
    command.downgrade(alembic_config(db_url), "0004")

    tables, columns, indexes = _schema(db_url)
    assert "change_counter" not in tables
    assert "change_seq" not in columns
    assert "ix_users_change_seq" not in indexes
    assert not _triggers(db_url)
    execute_sql(
        db_url,
        "INSERT INTO users (email, hashed_password, is_active, is_admin, is_deleted, "
        "created_at, updated_at) VALUES ('after@example.com', 'x', true, false, false, "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    )
    execute_sql(db_url, "UPDATE users SET name = 'After'")

    upgrade(db_url)
    assert _rows(db_url, "SELECT change_seq FROM users") == [(1,)]
    assert len(_triggers(db_url)) >= 2
