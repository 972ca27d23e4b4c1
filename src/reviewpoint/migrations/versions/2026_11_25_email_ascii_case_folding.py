"""Emails fold ASCII case only, on PostgreSQL as on SQLite.

The unique index compared `lower(email)`, which folds Unicode on PostgreSQL
(`Ärger@x` and `ärger@x` collided) but only ASCII on SQLite. `lower()` under
the "C" collation folds ASCII alone, so both databases now apply one rule
(`users.models.email_key`). SQLite's index expression is unchanged.

Folding less can only split addresses that collided before, so the new index
cannot fail on existing rows; a downgrade can, if two live users now differ only
in the case of a non-ASCII letter.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _recreate(expression: str) -> None:
    # PostgreSQL runs both statements in the migration's transaction, so no other
    # transaction ever sees the table without a unique index.
    is_live = sa.column("is_deleted") == sa.false()
    op.drop_index("uq_users_email_lower", table_name="users")
    op.create_index(
        "uq_users_email_lower",
        "users",
        [sa.text(expression)],
        unique=True,
        postgresql_where=is_live,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _recreate('lower(email COLLATE "C")')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _recreate("lower(email)")
