"""A user removed with SQL `DELETE` (or `TRUNCATE`) takes a change number too.

The service only soft-deletes, but rows removed by hand (psql, a retention
script) change what an export holds. Without a number the data version would
stay where it was, and a conditional export (`ETag`, `If-None-Match`) would
answer 304 for a copy that still lists the removed users.

PostgreSQL: a BEFORE DELETE / BEFORE TRUNCATE statement trigger, reusing
0005's `users_take_change_seq()`: the number is taken before any user row
is locked (the lock order 0005 keeps), once per transaction. SQLite: an AFTER
DELETE row trigger bumps the counter (writers are serialised anyway).

A sync (`cursor=`) still cannot list a row that no longer exists: only the
counter moves, so the rows of the next sync are unchanged.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER users_change_seq_on_delete BEFORE DELETE ON users "
            "FOR EACH STATEMENT EXECUTE FUNCTION users_take_change_seq()"
        )
        op.execute(
            "CREATE TRIGGER users_change_seq_on_truncate BEFORE TRUNCATE ON users "
            "FOR EACH STATEMENT EXECUTE FUNCTION users_take_change_seq()"
        )
        return
    op.execute(
        "CREATE TRIGGER users_change_seq_on_delete AFTER DELETE ON users FOR EACH ROW "
        "BEGIN UPDATE change_counter SET value = value + 1 WHERE id = 1; END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER users_change_seq_on_truncate ON users")
        op.execute("DROP TRIGGER users_change_seq_on_delete ON users")
        return
    op.execute("DROP TRIGGER users_change_seq_on_delete")
