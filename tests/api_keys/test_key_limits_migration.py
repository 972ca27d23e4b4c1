"""Migration 0008 (key limits, what an export delivered): columns added; downgrade and back."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import inspect

from reviewpoint.db import create_engine
from reviewpoint.migrations import alembic_config, upgrade
from tests.data import create_api_key
from tests.exports.test_cursor_migration import _triggers

ADDED = {
    "api_keys": {"allowed_fields", "anonymized_only"},
    "export_audit": {"fields", "anonymized"},
}


def _columns(db_url: str) -> dict[str, set[str]]:
    async def run() -> dict[str, set[str]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: {
                        table: {column["name"] for column in inspect(sync).get_columns(table)}
                        for table in ADDED
                    }
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_upgrade_adds_the_limit_and_delivery_columns(db_url: str) -> None:
    columns = _columns(db_url)
    for table, added in ADDED.items():
        assert added <= columns[table]


def test_downgrade_drops_them_keeping_keys_and_upgrade_restores_them_unlimited(
    db_url: str,
) -> None:
    triggers = _triggers(db_url)
    key_id, _ = create_api_key(db_url, ["users:export"], fields=["id"], anonymized_only=True)
    command.downgrade(alembic_config(db_url), "0007")
    columns = _columns(db_url)
    for table, added in ADDED.items():
        assert not added & columns[table]
    upgrade(db_url)
    for table, added in ADDED.items():
        assert added <= _columns(db_url)[table]
    # Keys that outlived the downgrade come back without limits (NULL, false).
    from tests.exports.test_cursor_migration import _rows

    rows = _rows(
        db_url, f"SELECT allowed_fields, anonymized_only FROM api_keys WHERE id = {key_id}"
    )
    assert [(row[0], bool(row[1])) for row in rows] == [(None, False)]
    # api_keys and export_audit only: the users triggers are untouched.
    assert _triggers(db_url) == triggers
