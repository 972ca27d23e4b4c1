from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    and_,
    false,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

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
    # The number of the user's last change, set by the database's triggers from
    # `change_counter` (migration 0005; how sync uses it: exports/cursor.py).
    # Never written by the application, except by the seeder.
    change_seq: Mapped[int | None] = mapped_column(BigInteger, index=True)


# One row: the last change number handed out. Updating it is what orders writers.
change_counter = Table(
    "change_counter",
    Base.metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("value", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)


def email_key_sql(dialect: str, operand: str) -> str:
    """`email_key` spelled in `dialect`'s SQL, for statements written as text.

    Case folding is ASCII-only on both databases. SQLite's `lower()` folds ASCII
    only; PostgreSQL's follows the collation, and only "C" folds ASCII alone
    (`lower('ÄRGER' COLLATE "C")` is `Ärger`). RFC 5321 leaves the local part's
    case to the receiving server, and ASCII is what every provider folds.
    """
    if dialect == "postgresql":
        return f'lower(({operand}) COLLATE "C")'
    return f"lower({operand})"


class email_key(FunctionElement[str]):
    """What two emails must share to be the same address: the index and every lookup."""

    type = String()
    inherit_cache = True


@compiles(email_key)
def _compile_email_key(element: email_key, compiler: SQLCompiler, **kw: Any) -> str:
    return email_key_sql(compiler.dialect.name, compiler.process(element.clauses, **kw))


# Emails are unique among live users regardless of (ASCII) case; lookups compare
# the same expression, so they use this index. Deleted users do not hold their
# address, so it can be registered again.
Index(
    "uq_users_email_lower",
    email_key(User.email),
    unique=True,
    sqlite_where=User.is_deleted == false(),
    postgresql_where=User.is_deleted == false(),
)

_LIVE = User.is_deleted == false()
# Live users in id order: what every export reads (see the 0002 migration).
Index("ix_users_live_id", User.id, sqlite_where=_LIVE, postgresql_where=_LIVE)
# The export filters' indexes (see the 0006 migration): created_after/_before,
# updated_since and is_admin=true over live users.
Index("ix_users_live_created_at", User.created_at, sqlite_where=_LIVE, postgresql_where=_LIVE)
Index("ix_users_live_updated_at", User.updated_at, sqlite_where=_LIVE, postgresql_where=_LIVE)
_LIVE_ADMIN = and_(_LIVE, User.is_admin == true())
Index("ix_users_live_admins", User.id, sqlite_where=_LIVE_ADMIN, postgresql_where=_LIVE_ADMIN)
