"""Migration 0007: removing users with SQL moves the data version (ETags); downgrade and back."""

from __future__ import annotations

from alembic import command

from reviewpoint.migrations import alembic_config, upgrade
from tests.data import execute_sql, insert_users
from tests.exports.test_cursor_migration import _rows, _triggers

DELETE_TRIGGERS = {"users_change_seq_on_delete", "users_change_seq_on_truncate"}


def _counter(db_url: str) -> int:
    [(value,)] = _rows(db_url, "SELECT value FROM change_counter")
    assert isinstance(value, int)
    return value


def test_a_sql_delete_takes_a_change_number(db_url: str) -> None:
    insert_users(db_url, [(f"u{n}@example.com", f"U {n}") for n in range(3)])
    before = _counter(db_url)
    execute_sql(db_url, "DELETE FROM users WHERE id = 2")
    assert _counter(db_url) > before
    assert _rows(db_url, "SELECT id FROM users ORDER BY id") == [(1,), (3,)]


def test_truncate_takes_a_change_number_where_there_is_truncate(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        assert "users_change_seq_on_truncate" not in _triggers(db_url)  # SQLite has no TRUNCATE
        return
    insert_users(db_url, [("u@example.com", "U")])
    before = _counter(db_url)
    execute_sql(db_url, "TRUNCATE users CASCADE")
    assert _counter(db_url) > before


def test_downgrade_drops_only_the_delete_triggers_and_upgrade_restores_them(db_url: str) -> None:
    triggers = _triggers(db_url)
    assert "users_change_seq_on_delete" in triggers
    command.downgrade(alembic_config(db_url), "0006")
    assert _triggers(db_url) == triggers - DELETE_TRIGGERS
    insert_users(db_url, [("u@example.com", "U")])
    before = _counter(db_url)
    execute_sql(db_url, "DELETE FROM users")
    assert _counter(db_url) == before

    upgrade(db_url)
    assert _triggers(db_url) == triggers
