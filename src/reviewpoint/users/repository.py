"""Statements over `users`; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import false, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint.users.models import User, email_key

LIVE = User.is_deleted == false()


async def get_live(session: AsyncSession, *, user_id: int) -> User | None:
    return await session.scalar(select(User).where(User.id == user_id, LIVE))


async def get_live_by_email(session: AsyncSession, *, email: str) -> User | None:
    # Same expression as the unique index, so the lookup uses it.
    statement = select(User).where(email_key(User.email) == email_key(email), LIVE)
    return await session.scalar(statement)


async def list_live(
    session: AsyncSession, *, offset: int, limit: int
) -> tuple[Sequence[User], int]:
    page = await session.scalars(
        select(User).where(LIVE).order_by(User.id).offset(offset).limit(limit)
    )
    count = await session.scalar(select(func.count()).select_from(User).where(LIVE))
    return page.all(), count or 0


async def add(session: AsyncSession, user: User) -> User:
    session.add(user)
    await session.flush()
    return user
