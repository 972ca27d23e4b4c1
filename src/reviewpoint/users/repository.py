"""Statements over `users`; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import false, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint.users.models import User, email_key

LIVE = User.is_deleted == false()


async def get_live(session: AsyncSession, *, user_id: int) -> User | None:
    return await session.scalar(select(User).where(User.id == user_id, LIVE))


async def get_live_by_email(session: AsyncSession, *, email: str) -> User | None:
    # Same expression as the unique index, so the lookup uses it.
    statement = select(User).where(email_key(User.email) == email_key(email), LIVE)
    return await session.scalar(statement)


async def lock_active_admin_ids(session: AsyncSession) -> list[int]:
    """Ids of the live, active admins, their rows locked until the transaction ends.

    `FOR UPDATE` (PostgreSQL; SQLite has no row locks and ignores it) makes a
    concurrent transaction wait here and then see the rows as committed, so
    counting after the lock is safe. The id order keeps the locking order the
    same in every transaction.
    """
    statement = (
        select(User.id)
        .where(LIVE, User.is_active == true(), User.is_admin == true())
        .order_by(User.id)
        .with_for_update()
    )
    return list((await session.scalars(statement)).all())


async def list_live(
    session: AsyncSession, *, offset: int, limit: int, email: str | None = None
) -> tuple[Sequence[User], int]:
    """A page of live users by id, and how many match in all; `email` as logins match it."""
    where = [LIVE] if email is None else [LIVE, email_key(User.email) == email_key(email)]
    page = await session.scalars(
        select(User).where(*where).order_by(User.id).offset(offset).limit(limit)
    )
    count = await session.scalar(select(func.count()).select_from(User).where(*where))
    return page.all(), count or 0


async def list_live_after(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int | None = None,
    before_id: int | None = None,
    email: str | None = None,
) -> list[User]:
    """Up to `limit` live users by id after `after_id` (or the last ones before
    `before_id`), in id order; `email` as logins match it.

    Keyset paging for pages that must stay fast on millions of users: each page
    walks the live-id index (or the email index) from where the last one ended,
    with no OFFSET to skip and no count to make.
    """
    where = [LIVE] if email is None else [LIVE, email_key(User.email) == email_key(email)]
    if before_id is not None:
        statement = select(User).where(*where, User.id < before_id).order_by(User.id.desc())
        found = list((await session.scalars(statement.limit(limit))).all())
        return found[::-1]
    if after_id is not None:
        where.append(User.id > after_id)
    statement = select(User).where(*where).order_by(User.id).limit(limit)
    return list((await session.scalars(statement)).all())


async def add(session: AsyncSession, user: User) -> User:
    session.add(user)
    await session.flush()
    return user


async def record_login(session: AsyncSession, *, user_id: int, at: datetime) -> None:
    """Set `last_login_at` only: a login is not a change to the account (`updated_at`)."""
    await session.execute(
        update(User).where(User.id == user_id).values(last_login_at=at, updated_at=User.updated_at)
    )
