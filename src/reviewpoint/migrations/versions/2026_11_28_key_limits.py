"""Per-key data limits, and what each export delivered.

`api_keys.allowed_fields`: the export columns a key may receive, comma-separated
canonical names (NULL: no limit beyond its scopes). `api_keys.anonymized_only`:
the key gets pseudonyms, never real emails or names (exports/limits.py).

`export_audit.fields`: the columns an export delivered, comma-separated, and
`export_audit.anonymized`: `false`, `true` or `day` (the `anonymize` mode it
ran with). Both NULL for attempts refused before their columns were known.
Text rather than a boolean: `day` is a mode of its own (timestamps cut too),
and the trail should say which.

Plain ADD COLUMN on both databases; the downgrade rebuilds the tables on SQLite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not batch mode: it reflects the table, and with it `users` through the
    # foreign key, which makes SQLAlchemy warn on `db upgrade` about the
    # expression index it cannot reflect. SQLite adds a NOT NULL column with a
    # constant default in place.
    op.add_column("api_keys", sa.Column("allowed_fields", sa.Text(), nullable=True))
    op.add_column(
        "api_keys",
        sa.Column("anonymized_only", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("export_audit", sa.Column("fields", sa.Text(), nullable=True))
    op.add_column("export_audit", sa.Column("anonymized", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("export_audit") as batch:
        batch.drop_column("anonymized")
        batch.drop_column("fields")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("anonymized_only")
        batch.drop_column("allowed_fields")
