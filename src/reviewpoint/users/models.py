from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, false, func, true
from sqlalchemy.orm import Mapped, mapped_column

from reviewpoint.db import Base, UTCDateTime, utcnow

EMAIL_MAX_LENGTH = 320
NAME_MAX_LENGTH = 128


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH))
    hashed_password: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(NAME_MAX_LENGTH))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# Emails are unique among live users regardless of case; lookups compare the same
# expression. Deleted users do not hold their address, so it can be registered again.
Index(
    "uq_users_email_lower",
    func.lower(User.email),
    unique=True,
    sqlite_where=User.is_deleted == false(),
    postgresql_where=User.is_deleted == false(),
)

# Live users in id order: what every export reads (see the 0002 migration).
Index(
    "ix_users_live_id",
    User.id,
    sqlite_where=User.is_deleted == false(),
    postgresql_where=User.is_deleted == false(),
)
