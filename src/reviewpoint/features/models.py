from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from reviewpoint.db import Base, UTCDateTime
from reviewpoint.users.models import EMAIL_MAX_LENGTH

NAME_MAX_LENGTH = 64
# Who changed a flag: an admin's email, or `cli:` and the operator's OS user name.
CHANGED_BY_MAX_LENGTH = EMAIL_MAX_LENGTH


class FeatureFlag(Base):
    """An admin's override of one flag's environment default; no row, no override."""

    __tablename__ = "feature_flags"

    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    # A plain id, not a foreign key: the record outlives the user it names.
    changed_by_id: Mapped[int | None] = mapped_column(Integer)
    changed_by: Mapped[str] = mapped_column(String(CHANGED_BY_MAX_LENGTH))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeatureFlagChange(Base):
    """One change of an override; `old_enabled` and `new_enabled` are effective values."""

    __tablename__ = "feature_flag_changes"
    __table_args__ = (Index("ix_feature_flag_changes_changed_at", "changed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    # enable | disable | reset
    action: Mapped[str] = mapped_column(String(16))
    old_enabled: Mapped[bool] = mapped_column(Boolean)
    new_enabled: Mapped[bool] = mapped_column(Boolean)
    changed_by_id: Mapped[int | None] = mapped_column(Integer)
    changed_by: Mapped[str] = mapped_column(String(CHANGED_BY_MAX_LENGTH))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
