"""Change sequence: every write to a user takes a number in commit order (incremental sync).

- `change_counter`: one row, the last number handed out.
- `users.change_seq`: the number of the user's last change (insert, update,
  soft delete), set by triggers so that writes from any path (API, CLI,
  scripts, psql) are covered; `ix_users_change_seq` finds the rows changed
  after a cursor.
- A login (only `last_login_at` changes) takes no number: it is not a change
  to the account.

Why a counter row and not a sequence or a timestamp: taking a number means
updating that row, and its row lock is held until the writer commits, so
writers take numbers in commit order and a snapshot sees exactly the numbers
up to the counter's value (see `reviewpoint.exports.cursor`).

PostgreSQL: a BEFORE ROW trigger sets the number; one transaction takes one
number for all its rows (remembered in a transaction-local setting), so a bulk
UPDATE does not update the counter row once per user. An UPDATE of an account
column takes the number in a BEFORE STATEMENT trigger, before it locks any
user row: a writer then never holds a user row while it waits for the counter,
which would deadlock with a transaction that holds the counter and needs that
row. (`updated_at` is left out of that trigger's column list so that a login,
which names it to keep it unchanged, takes nothing; a statement changing only
`updated_at` still gets its number from the row trigger.) An INSERT that sets
`change_seq` itself keeps it (the seeder takes one number per run).
SQLite: AFTER triggers (a BEFORE trigger cannot set NEW), one number per row;
writers are serialised by the database lock anyway. A later migration that
rebuilds `users` on SQLite (batch mode copies the table) must re-create them.

Existing rows are numbered by id; the counter starts after them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every column but the bookkeeping ones (`last_login_at`, `change_seq`): a
# change to any of these is a change a sync must see.
_TRACKED = (
    "email",
    "hashed_password",
    "name",
    "is_active",
    "is_admin",
    "is_deleted",
    "created_at",
    "updated_at",
)

_PG_FUNCTION = """
CREATE FUNCTION users_take_change_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    taken text := nullif(current_setting('reviewpoint.change_seq', true), '');
BEGIN
    IF taken IS NULL THEN
        UPDATE change_counter SET value = value + 1 WHERE id = 1
            RETURNING value::text INTO taken;
        PERFORM set_config('reviewpoint.change_seq', taken, true);
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN
        RETURN NULL;
    END IF;
    NEW.change_seq := taken::bigint;
    RETURN NEW;
END
$$
"""


def _pg_changed() -> str:
    old = ", ".join(f"OLD.{column}" for column in _TRACKED)
    new = ", ".join(f"NEW.{column}" for column in _TRACKED)
    return f"({old}) IS DISTINCT FROM ({new})"


_SQLITE_TAKE = """
BEGIN
    UPDATE change_counter SET value = value + 1 WHERE id = 1;
    UPDATE users SET change_seq = (SELECT value FROM change_counter WHERE id = 1)
        WHERE id = NEW.id;
END
"""


def upgrade() -> None:
    op.create_table(
        "change_counter",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_change_counter_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_counter")),
    )
    op.add_column("users", sa.Column("change_seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE users SET change_seq = id")
    op.execute("INSERT INTO change_counter (id, value) SELECT 1, coalesce(max(id), 0) FROM users")
    op.create_index("ix_users_change_seq", "users", ["change_seq"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER users_change_seq_on_insert BEFORE INSERT ON users FOR EACH ROW "
            "WHEN (NEW.change_seq IS NULL) EXECUTE FUNCTION users_take_change_seq()"
        )
        op.execute(
            "CREATE TRIGGER users_change_seq_on_update BEFORE UPDATE ON users FOR EACH ROW "
            f"WHEN ({_pg_changed()}) EXECUTE FUNCTION users_take_change_seq()"
        )
        op.execute(
            "CREATE TRIGGER users_change_seq_before_rows "
            f"BEFORE UPDATE OF {', '.join(c for c in _TRACKED if c != 'updated_at')} "
            "ON users FOR EACH STATEMENT EXECUTE FUNCTION users_take_change_seq()"
        )
        return
    op.execute(
        "CREATE TRIGGER users_change_seq_on_insert AFTER INSERT ON users FOR EACH ROW "
        f"WHEN NEW.change_seq IS NULL {_SQLITE_TAKE}"
    )
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in _TRACKED)
    op.execute(
        f"CREATE TRIGGER users_change_seq_on_update AFTER UPDATE OF {', '.join(_TRACKED)} "
        f"ON users FOR EACH ROW WHEN {changed} {_SQLITE_TAKE}"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER users_change_seq_on_update" + _on_users())
    op.execute("DROP TRIGGER users_change_seq_on_insert" + _on_users())
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER users_change_seq_before_rows ON users")
        op.execute("DROP FUNCTION users_take_change_seq()")
    op.drop_index("ix_users_change_seq", table_name="users")
    op.drop_column("users", "change_seq")
    op.drop_table("change_counter")


def _on_users() -> str:
    # PostgreSQL names a trigger within its table; SQLite's names are global.
    return " ON users" if op.get_bind().dialect.name == "postgresql" else ""
