"""Export API keys: issue, list, revoke, and check a presented secret."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint import security
from reviewpoint.api_keys.models import ApiKey
from reviewpoint.api_keys.schemas import Scope
from reviewpoint.db import Database, utcnow
from reviewpoint.errors import ResourceNotFound

log = logging.getLogger("reviewpoint.api_keys")

# A scope also grants the scopes listed here: the full export is a superset.
IMPLIED_SCOPES: dict[str, tuple[str, ...]] = {"users:export_full": ("users:export",)}


def grants(scopes: Iterable[str], needed: str) -> bool:
    return any(scope == needed or needed in IMPLIED_SCOPES.get(scope, ()) for scope in scopes)


async def create(
    session: AsyncSession,
    *,
    name: str,
    scopes: Sequence[Scope],
    expires_in_days: int | None = None,
    created_by: int | None = None,
) -> tuple[ApiKey, str]:
    """The new key and its secret; the secret exists only in this return value."""
    new = security.generate_api_key()
    now = utcnow()
    key = ApiKey(
        name=name,
        prefix=new.prefix,
        secret_hash=new.secret_hash,
        scopes=" ".join(dict.fromkeys(scopes)),
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(key)
    await session.flush()
    return key, new.secret


async def list_all(session: AsyncSession) -> Sequence[ApiKey]:
    return (await session.scalars(select(ApiKey).order_by(ApiKey.id))).all()


async def revoke(session: AsyncSession, *, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise ResourceNotFound("API key not found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key


async def find_live(session: AsyncSession, *, secret: str) -> ApiKey | None:
    """The live key this secret belongs to, or None. Writes nothing."""
    prefix = security.api_key_prefix(secret)
    if prefix is None:
        return None
    key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None or not security.api_key_matches(secret, key.secret_hash):
        return None
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= utcnow()):
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
