"""Operations: the export audit trail, runtime feature flags, key rotation.

- `export_audit`: one row per export attempt. Actors are copied (id, name,
  key prefix) rather than referenced, so a record outlives the user or key it
  names, and no secret or digest is ever stored.
- `feature_flags`: an admin's override of a flag's environment default;
  `feature_flag_changes`: who changed which flag when, from what to what.
- `api_keys.rotated_from_id`: the key a rotation replaced.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import SAWarning

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "export_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=True),
        sa.Column("filters", sa.Text(), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(length=320), nullable=True),
        sa.Column("key_prefix", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("rows", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_audit")),
    )
    op.create_index("ix_export_audit_started_at", "export_audit", ["started_at"])
    op.create_index("ix_export_audit_actor", "export_audit", ["actor_kind", "actor_id"])
    op.create_index("ix_export_audit_outcome", "export_audit", ["outcome"])

    op.create_table(
        "feature_flags",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("changed_by_id", sa.Integer(), nullable=True),
        sa.Column("changed_by", sa.String(length=320), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_feature_flags")),
    )
    op.create_table(
        "feature_flag_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("old_enabled", sa.Boolean(), nullable=False),
        sa.Column("new_enabled", sa.Boolean(), nullable=False),
        sa.Column("changed_by_id", sa.Integer(), nullable=True),
        sa.Column("changed_by", sa.String(length=320), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_flag_changes")),
    )
    op.create_index("ix_feature_flag_changes_changed_at", "feature_flag_changes", ["changed_at"])

    # SQLite rebuilds the table; reflecting it warns that the users table's
    # expression index cannot be reflected, which this rebuild never touches.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        _add_rotated_from()


def _add_rotated_from() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rotated_from_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_api_keys_rotated_from_id_api_keys"),
            "api_keys",
            ["rotated_from_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("fk_api_keys_rotated_from_id_api_keys"), type_="foreignkey")
        batch.drop_column("rotated_from_id")
    op.drop_index("ix_feature_flag_changes_changed_at", table_name="feature_flag_changes")
    op.drop_table("feature_flag_changes")
    op.drop_table("feature_flags")
    op.drop_index("ix_export_audit_outcome", table_name="export_audit")
    op.drop_index("ix_export_audit_actor", table_name="export_audit")
    op.drop_index("ix_export_audit_started_at", table_name="export_audit")
    op.drop_table("export_audit")
