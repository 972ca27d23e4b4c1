"""Migration 0010 (audit range indexes): the indexes the model describes; downgrade and back."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import SAWarning

from reviewpoint.audit.models import ExportAudit
from reviewpoint.db import Base, create_engine
from reviewpoint.migrations import alembic_config, upgrade

TABLE = ExportAudit.__tablename__


def _inspect(db_url: str) -> tuple[dict[str, list[str]], list[Any]]:
    """The audit table's indexes (name: columns), and how the table differs from its model."""

    def read(sync: Any) -> tuple[dict[str, list[str]], list[Any]]:
        indexes = {
            index["name"]: list(index["column_names"]) for index in inspect(sync).get_indexes(TABLE)
        }
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
            warnings.simplefilter("ignore", SAWarning)
            differences = compare_metadata(context, Base.metadata)
        return indexes, differences

    async def run() -> tuple[dict[str, list[str]], list[Any]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_each_filter_index_ends_in_the_start_time_and_the_charts_columns(db_url: str) -> None:
    indexes, differences = _inspect(db_url)
    assert differences == []
    assert indexes == {
        "ix_export_audit_started_outcome_rows": ["started_at", "outcome", "rows"],
        "ix_export_audit_outcome_started": ["outcome", "started_at", "rows"],
        "ix_export_audit_actor_started": [
            "actor_kind",
            "actor_id",
            "started_at",
            "outcome",
            "rows",
        ],
    }


def test_downgrade_restores_the_0004_indexes_and_upgrade_replaces_them(db_url: str) -> None:
    command.downgrade(alembic_config(db_url), "0009")
    indexes, _ = _inspect(db_url)
    assert indexes == {
        "ix_export_audit_started_at": ["started_at"],
        "ix_export_audit_outcome": ["outcome"],
        "ix_export_audit_actor": ["actor_kind", "actor_id"],
    }
    upgrade(db_url)
    indexes, differences = _inspect(db_url)
    assert differences == []
    assert len(indexes) == 3
