"""One row per call to an export endpoint (table created by migration 0004)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from reviewpoint.db import Base, UTCDateTime

# Column sizes of migration 0004: values are cut to fit before they are written.
REQUEST_ID_LENGTH = 64
ENDPOINT_LENGTH = 32
FORMAT_LENGTH = 32
ACTOR_KIND_LENGTH = 16
ACTOR_NAME_LENGTH = 320
KEY_PREFIX_LENGTH = 32
DETAIL_LENGTH = 255
CLIENT_ADDRESS_LENGTH = 64
USER_AGENT_LENGTH = 512


class ExportAudit(Base):
    """Who took which users, when, and how it ended.

    The actor is copied (id, name, key prefix), not referenced, so the record
    outlives the user or key it names; no secret or digest is ever stored.
    """

    __tablename__ = "export_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH))
    endpoint: Mapped[str] = mapped_column(String(ENDPOINT_LENGTH))
    format: Mapped[str | None] = mapped_column(String(FORMAT_LENGTH))
    # The recorded query parameters as a JSON object (exports/attempt.py names them).
    filters: Mapped[str | None] = mapped_column(Text)
    actor_kind: Mapped[str | None] = mapped_column(String(ACTOR_KIND_LENGTH))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str | None] = mapped_column(String(ACTOR_NAME_LENGTH))
    key_prefix: Mapped[str | None] = mapped_column(String(KEY_PREFIX_LENGTH))
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(DETAIL_LENGTH))
    rows: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    # What was delivered (migration 0008): the columns, comma-separated, and the
    # `anonymize` mode (`false`, `true`, `day`); NULL when refused before that was known.
    fields: Mapped[str | None] = mapped_column(Text)
    anonymized: Mapped[str | None] = mapped_column(String(8))
    client_address: Mapped[str | None] = mapped_column(String(CLIENT_ADDRESS_LENGTH))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_LENGTH))

    # Each filter's column, then the start time (range and order), then what the
    # per-day chart counts: a page and its chart read the index alone (0010).
    __table_args__ = (
        Index("ix_export_audit_started_outcome_rows", "started_at", "outcome", "rows"),
        Index(
            "ix_export_audit_actor_started",
            "actor_kind",
            "actor_id",
            "started_at",
            "outcome",
            "rows",
        ),
        Index("ix_export_audit_outcome_started", "outcome", "started_at", "rows"),
    )
