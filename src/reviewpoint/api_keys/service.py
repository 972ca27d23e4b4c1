"""Export API keys: issue, list, revoke, rotate, and check a presented secret."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from reviewpoint import security
from reviewpoint.api_keys.models import ApiKey
from reviewpoint.api_keys.schemas import Scope
from reviewpoint.db import Database, utcnow
from reviewpoint.errors import Conflict, ResourceNotFound
from reviewpoint.users.models import User

log = logging.getLogger("reviewpoint.api_keys")

# A scope also grants the scopes listed here: the full export is a superset.
IMPLIED_SCOPES: dict[str, tuple[str, ...]] = {"users:export_full": ("users:export",)}


def grants(scopes: Iterable[str], needed: str) -> bool:
    return any(scope == needed or needed in IMPLIED_SCOPES.get(scope, ()) for scope in scopes)


class ApiKeyNotFound(ResourceNotFound):
    def __init__(self) -> None:
        super().__init__("API key not found")


class AlreadyRevoked(Conflict):
    """Revoking twice is refused so the caller learns the key was already dead, and since when."""

    def __init__(self, key: ApiKey) -> None:
        assert key.revoked_at is not None
        super().__init__(f"API key {key.id} is already revoked (since {iso(key.revoked_at)})")
        self.key = key


class NotRotatable(Conflict):
    """A revoked or expired key stays dead: rotating it would bring its access back."""

    def __init__(self, key: ApiKey, state: str, since: datetime) -> None:
        super().__init__(
            f"API key {key.id} is {state} (since {iso(since)}); issue a new key instead"
        )


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# What a listing shows beside a key: who created it (a second, batched query).
WITH_CREATOR = selectinload(ApiKey.creator)


async def create(
    session: AsyncSession,
    *,
    name: str,
    scopes: Sequence[Scope],
    expires_in_days: int | None = None,
    created_by: int | None = None,
    fields: Sequence[str] | None = None,
    anonymized_only: bool = False,
) -> tuple[ApiKey, str]:
    """The new key and its secret; the secret exists only in this return value.

    `fields` and `anonymized_only` are its data limits (exports/limits.py);
    `fields` must already be checked (`limits.field_names`).
    """
    now = utcnow()
    return await _issue(
        session,
        name=name,
        scopes=" ".join(dict.fromkeys(scopes)),
        allowed_fields=None if fields is None else ",".join(fields),
        anonymized_only=anonymized_only,
        now=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        created_by=created_by,
    )


async def _issue(
    session: AsyncSession,
    *,
    name: str,
    scopes: str,
    now: datetime,
    expires_at: datetime | None,
    created_by: int | None,
    allowed_fields: str | None,
    anonymized_only: bool,
    rotated_from_id: int | None = None,
) -> tuple[ApiKey, str]:
    new = security.generate_api_key()
    # Set as an object, not only its id, so the new key lists its creator without a load.
    creator = None if created_by is None else await session.get(User, created_by)
    key = ApiKey(
        name=name,
        prefix=new.prefix,
        secret_hash=new.secret_hash,
        scopes=scopes,
        allowed_fields=allowed_fields,
        anonymized_only=anonymized_only,
        creator=creator,
        created_at=now,
        expires_at=expires_at,
        rotated_from_id=rotated_from_id,
    )
    session.add(key)
    await session.flush()
    return key, new.secret


async def list_all(session: AsyncSession) -> Sequence[ApiKey]:
    return (await session.scalars(select(ApiKey).options(WITH_CREATOR).order_by(ApiKey.id))).all()


async def _get_locked(session: AsyncSession, key_id: int) -> ApiKey:
    """The key, its row locked until the transaction ends (PostgreSQL; SQLite's
    writing transactions are serialised by BEGIN IMMEDIATE), so two revocations or
    rotations of one key cannot both see it live."""
    key = await session.get(ApiKey, key_id, with_for_update=True, options=[WITH_CREATOR])
    if key is None:
        raise ApiKeyNotFound()
    return key


async def revoke(session: AsyncSession, *, key_id: int) -> ApiKey:
    key = await _get_locked(session, key_id)
    if key.revoked_at is not None:
        raise AlreadyRevoked(key)
    key.revoked_at = utcnow()
    await session.flush()
    return key


async def rotate(
    session: AsyncSession, *, key_id: int, grace: timedelta, rotated_by: int | None = None
) -> tuple[ApiKey, ApiKey, str]:
    """Replace a live key: the old one, the new one, and the new secret.

    The new key keeps the old one's name, scopes, data limits and expiry (a
    rotation changes the secret, not what it may do or for how long). The old key stops after
    `grace`, or at its own expiry if that comes first; rotating it again never
    extends that deadline.
    """
    old = await _get_locked(session, key_id)
    now = utcnow()
    if old.revoked_at is not None:
        raise NotRotatable(old, "revoked", old.revoked_at)
    if old.expires_at is not None and old.expires_at <= now:
        raise NotRotatable(old, "expired", old.expires_at)
    new, secret = await _issue(
        session,
        name=old.name,
        scopes=old.scopes,
        allowed_fields=old.allowed_fields,
        anonymized_only=old.anonymized_only,
        now=now,
        expires_at=await _original_expiry(session, old),
        created_by=rotated_by,
        rotated_from_id=old.id,
    )
    deadline = now + grace
    if old.expires_at is None or deadline < old.expires_at:
        old.expires_at = deadline
    await session.flush()
    return old, new, secret


async def _original_expiry(session: AsyncSession, key: ApiKey) -> datetime | None:
    """When `key` expires by its own lifetime, whatever grace deadline a rotation set.

    A rotation moves the old key's `expires_at` to its grace deadline, and its
    first successor inherits the lifetime it had; that successor may have been
    rotated in turn, so the lifetime is kept by the last key of the chain of
    first successors.
    """
    while True:
        first_successor = await session.scalar(
            select(ApiKey).where(ApiKey.rotated_from_id == key.id).order_by(ApiKey.id).limit(1)
        )
        if first_successor is None:
            return key.expires_at
        key = first_successor


async def find_live(session: AsyncSession, *, secret: str) -> ApiKey | None:
    """The live key this secret belongs to, or None. Writes nothing.

    A key issued over HTTP stands on its issuer (`created_by`, the admin who
    issued or last rotated it, the one person shown its secret): it works only
    while that user is live, active and an administrator, so deactivating,
    deleting or demoting an admin also ends the keys they could have copied,
    and restoring the admin restores them. Keys made with the CLI have no
    issuer. One indexed query still: the issuer comes by primary key.
    """
    prefix = security.api_key_prefix(secret)
    if prefix is None:
        return None
    statement = (
        select(ApiKey, User.is_active, User.is_admin, User.is_deleted)
        .outerjoin(User, ApiKey.created_by == User.id)
        .where(ApiKey.prefix == prefix)
    )
    row = (await session.execute(statement)).first()
    if row is None:
        return None
    key, issuer_active, issuer_admin, issuer_deleted = row
    if not security.api_key_matches(secret, key.secret_hash):
        return None
    if key.revoked_at is not None or key.expired(utcnow()):
        return None
    if key.created_by is not None and not (issuer_active and issuer_admin and not issuer_deleted):
        return None
    return key


# Writing `last_used_at` on every request would queue all exports of one key on
# its row (on SQLite, on the database's write lock): it is kept to the minute,
# and written beside the request, which never waits for it.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def record_use(database: Database, key: ApiKey) -> None:
    """Note that `key` was used, at most once a minute, in a transaction of its own."""
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    database.spawn_once(f"api-key-used-{key.id}", lambda: _write_last_used(database, key.id, now))


async def _write_last_used(database: Database, key_id: int, now: datetime) -> None:
    # A failure is logged and dropped: a timestamp is not worth refusing an export.
    stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION)
    try:
        async with database.transaction() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id, stale).values(last_used_at=now)
            )
    except (SQLAlchemyError, OSError) as error:
        log.warning("could not record use of API key %s: %r", key_id, error)
