"""Migration 0006 (the export filters' indexes): partial on live users; downgrade and back."""

from __future__ import annotations

from alembic import command

from reviewpoint.migrations import alembic_config, upgrade
from tests.exports.test_change_on_delete_migration import DELETE_TRIGGERS
from tests.exports.test_cursor_migration import _rows, _schema, _triggers

FILTER_INDEXES = {"ix_users_live_created_at", "ix_users_live_updated_at", "ix_users_live_admins"}


def _definitions(db_url: str) -> dict[str, str]:
    """Each filter index's SQL as the database holds it (its partial condition included)."""
    if db_url.startswith("postgresql"):
        sql = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'users'"
    else:
        sql = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'"
    return {
        str(name): str(definition).lower()
        for name, definition in _rows(db_url, sql)
        if name in FILTER_INDEXES
    }


def test_upgrade_creates_the_filter_indexes_over_live_users_only(db_url: str) -> None:
    definitions = _definitions(db_url)
    assert set(definitions) == FILTER_INDEXES
    assert all("is_deleted" in definition for definition in definitions.values())
    assert "created_at" in definitions["ix_users_live_created_at"]
    assert "updated_at" in definitions["ix_users_live_updated_at"]
    assert "is_admin" in definitions["ix_users_live_admins"]


def test_downgrade_drops_the_filter_indexes_and_keeps_the_change_triggers(db_url: str) -> None:
    triggers = _triggers(db_url)
    assert triggers
    command.downgrade(alembic_config(db_url), "0005")
    assert not FILTER_INDEXES & _schema(db_url)[2]
    assert "ix_users_live_id" in _schema(db_url)[2]
    # Those of 0005 stay; the later delete triggers (0007) went with their revision.
    assert _triggers(db_url) == triggers - DELETE_TRIGGERS

    upgrade(db_url)
    assert FILTER_INDEXES.issubset(_schema(db_url)[2])
    # Plain CREATE INDEX, no batch rebuild of users: the 0005 triggers survive.
    assert _triggers(db_url) == triggers
