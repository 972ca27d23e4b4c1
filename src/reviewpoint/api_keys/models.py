from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from reviewpoint.db import Base, UTCDateTime, utcnow
from reviewpoint.users.models import User


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    # Space-separated, as in OAuth2 scope strings.
    scopes: Mapped[str] = mapped_column(String(255))
    # NULL when created from the CLI by an operator rather than by an admin user.
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Data limits (migration 0008, exports/limits.py): the export columns the key
    # may receive, comma-separated (NULL: every column its scopes allow), and
    # whether it gets only pseudonyms instead of real emails and names.
    allowed_fields: Mapped[str | None] = mapped_column(Text)
    anonymized_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The key a rotation replaced (migration 0004).
    rotated_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )

    # Loaded only where a listing asks for it (`service.WITH_CREATOR`): checking a
    # presented secret must stay one indexed lookup, and "raise" makes a forgotten
    # load fail in tests instead of issuing a hidden query.
    creator: Mapped[User | None] = relationship(lazy="raise")

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    @property
    def field_list(self) -> list[str] | None:
        return None if self.allowed_fields is None else self.allowed_fields.split(",")

    @property
    def created_by_email(self) -> str | None:
        return self.creator.email if self.creator is not None else None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now
