"""User rules: unique emails, soft deletes, password checks.

Argon2 hashing takes tens of milliseconds of CPU, so it runs on the bounded
hashing threads of `security`, never inside a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint import security
from reviewpoint.db import Database, utcnow
from reviewpoint.errors import Conflict, ResourceNotFound
from reviewpoint.users import repository
from reviewpoint.users.models import User
from reviewpoint.users.schemas import UserCreate, UserUpdate


class EmailTaken(Conflict):
    def __init__(self) -> None:
        super().__init__("A user with this email already exists")


class UserNotFound(ResourceNotFound):
    def __init__(self) -> None:
        super().__init__("User not found")


class LastActiveAdmin(Conflict):
    def __init__(self) -> None:
        super().__init__("At least one active administrator must remain")


class OwnAccount(Conflict):
    def __init__(self) -> None:
        super().__init__("Administrators cannot delete their own account")


async def _flush_unique(session: AsyncSession) -> None:
    """Flush inside a savepoint so a lost race on the email index becomes a 409."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise EmailTaken() from None


async def create(session: AsyncSession, *, data: UserCreate) -> User:
    # Hash before the first statement: the session takes its connection (on
    # SQLite, the write lock) only then, so nothing waits on Argon2.
    hashed_password = await security.hash_password_in_worker(data.password)
    if await repository.get_live_by_email(session, email=data.email) is not None:
        raise EmailTaken()
    user = User(
        email=data.email,
        hashed_password=hashed_password,
        name=data.name,
        is_active=data.is_active,
        is_admin=data.is_admin,
    )
    session.add(user)
    await _flush_unique(session)
    return user


async def get(session: AsyncSession, *, user_id: int) -> User:
    user = await repository.get_live(session, user_id=user_id)
    if user is None:
        raise UserNotFound()
    return user


async def list_page(
    session: AsyncSession, *, offset: int, limit: int, email: str | None = None
) -> tuple[Sequence[User], int]:
    return await repository.list_live(session, offset=offset, limit=limit, email=email)


async def list_after(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int | None = None,
    before_id: int | None = None,
    email: str | None = None,
) -> list[User]:
    """A keyset page of live users (the console's): no offset, no total."""
    return await repository.list_live_after(
        session, limit=limit, after_id=after_id, before_id=before_id, email=email
    )


async def _keep_an_active_admin(session: AsyncSession, *, losing: User) -> None:
    """Refuse to let `losing` stop being an active admin if they are the last one.

    Race-safe inside the request's transaction: on PostgreSQL the active admins'
    rows stay locked until commit, so of two admins demoting each other the
    second waits, then counts again without the first; SQLite request
    transactions start with BEGIN IMMEDIATE, which already serialises writers.
    """
    admins = await repository.lock_active_admin_ids(session)
    if admins == [losing.id]:
        raise LastActiveAdmin()


async def update(session: AsyncSession, *, user_id: int, data: UserUpdate) -> User:
    changes = data.model_dump(exclude_unset=True)
    password = changes.pop("password", None)
    # Hashed before the first statement, as in `create`.
    hashed_password = None if password is None else await security.hash_password_in_worker(password)
    user = await get(session, user_id=user_id)
    new_email = changes.get("email")
    if new_email is not None:
        # The database's email rule decides (ASCII case only), not Python's lower().
        holder = await repository.get_live_by_email(session, email=new_email)
        if holder is not None and holder.id != user.id:
            raise EmailTaken()
    if changes.get("is_active") is False or changes.get("is_admin") is False:
        await _keep_an_active_admin(session, losing=user)
    if hashed_password is not None:
        user.hashed_password = hashed_password
    for field in ("email", "name", "is_active", "is_admin"):
        if field in changes and (changes[field] is not None or field == "name"):
            setattr(user, field, changes[field])
    user.updated_at = utcnow()
    await _flush_unique(session)
    return user


async def soft_delete(session: AsyncSession, *, user_id: int, by_id: int | None = None) -> None:
    """Keep the row for audits; the user leaves logins, listings and exports.

    `by_id`: the admin asking, who may not delete themselves (the CLI has no account).
    """
    if by_id is not None and user_id == by_id:
        raise OwnAccount()
    user = await get(session, user_id=user_id)
    await _keep_an_active_admin(session, losing=user)
    user.is_deleted = True
    user.is_active = False
    user.updated_at = utcnow()
    await session.flush()


async def authenticate(database: Database, *, email: str, password: str) -> User | None:
    """The active user with these credentials, or None; records the login.

    The lookup and the login record are two short transactions with the password
    check between them, so no connection or lock is held while Argon2 runs.
    """
    async with database.transaction(read_only=True) as session:
        user = await repository.get_live_by_email(session, email=email)
    valid = await security.check_password(password, user.hashed_password if user else None)
    if user is None or not valid or not user.is_active:
        return None
    now = utcnow()
    async with database.transaction() as session:
        await repository.record_login(session, user_id=user.id, at=now)
    user.last_login_at = now
    return user
