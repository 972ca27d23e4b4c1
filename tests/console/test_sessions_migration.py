"""Migration 0009 (console sessions): the table the model describes; downgrade and back."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import SAWarning

from reviewpoint.console.models import ConsoleSession
from reviewpoint.db import Base, create_engine
from reviewpoint.migrations import alembic_config, upgrade

TABLE = ConsoleSession.__tablename__


def _inspect(db_url: str) -> tuple[set[str], list[Any]]:
    """The tables there are, and how the console's differs from its model."""

    def read(sync: Any) -> tuple[set[str], list[Any]]:
        tables = set(inspect(sync).get_table_names())
        # The console's table only: the others have migration tests of their own.
        context = MigrationContext.configure(
            sync,
            opts={
                "compare_type": False,
                "include_name": lambda name, kind, _parents: kind != "table" or name == TABLE,
                "include_object": lambda item, name, kind, _reflected, _other: (
                    (name if kind == "table" else item.table.name) == TABLE
                ),
            },
        )
        with warnings.catch_warnings():
            # Reflecting `users` (the foreign key's target) meets its expression
            # index, which SQLite cannot reflect; the console's table has none.
            warnings.simplefilter("ignore", SAWarning)
            differences = compare_metadata(context, Base.metadata)
        return tables, differences

    async def run() -> tuple[set[str], list[Any]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_upgrade_creates_the_table_the_model_describes(db_url: str) -> None:
    tables, differences = _inspect(db_url)
    assert TABLE in tables
    assert differences == []


def test_downgrade_drops_the_table_and_upgrade_restores_it(db_url: str) -> None:
    command.downgrade(alembic_config(db_url), "0008")
    tables, _ = _inspect(db_url)
    assert TABLE not in tables
    upgrade(db_url)
    tables, differences = _inspect(db_url)
    assert TABLE in tables
    assert differences == []
