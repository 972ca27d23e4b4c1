"""Test data, made through the project's own services (never by mocking them)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text

from reviewpoint import security
from reviewpoint.api_keys import service as api_keys
from reviewpoint.api_keys.schemas import Scope
from reviewpoint.config import Settings
from reviewpoint.db import create_engine, standalone_session, utcnow
from reviewpoint.users import service as users
from reviewpoint.users.models import User
from reviewpoint.users.schemas import UserCreate

ADMIN_PASSWORD = "admin-password-1"
# What the API shows of a user: never the password or its hash.
USER_PUBLIC_FIELDS = {
    "id",
    "email",
    "name",
    "is_active",
    "is_admin",
    "created_at",
    "updated_at",
    "last_login_at",
}
# What the API shows of an API key: never the secret or its digest.
API_KEY_PUBLIC_FIELDS = {
    "id",
    "name",
    "prefix",
    "scopes",
    "created_by",
    "created_by_email",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
    "rotated_from_id",
    "fields",
    "anonymized_only",
}
# Every user made by `insert_users` or `insert_user` has this password.
BULK_PASSWORD = "bulk-user-password"
_BULK_HASH = security.hash_password(BULK_PASSWORD)


def create_user(
    db_url: str,
    email: str,
    *,
    password: str = "user-password-1",
    name: str | None = None,
    is_admin: bool = False,
    is_active: bool = True,
) -> int:
    async def run() -> int:
        async with standalone_session(db_url) as session:
            data = UserCreate(
                email=email, password=password, name=name, is_admin=is_admin, is_active=is_active
            )
            return (await users.create(session, data=data)).id

    return asyncio.run(run())


def insert_users(
    db_url: str,
    rows: Sequence[tuple[str, str | None]],
    *,
    created_at: datetime | None = None,
) -> None:
    """Many users at once, sharing one password hash (Argon2 per row would be slow)."""
    moment = created_at or utcnow()
    values = [
        {
            "email": email,
            "name": name,
            "hashed_password": _BULK_HASH,
            "created_at": moment,
            "updated_at": moment,
        }
        for email, name in rows
    ]

    async def run() -> None:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(insert(User), values)
        finally:
            await engine.dispose()

    asyncio.run(run())


def insert_user(
    db_url: str,
    email: str,
    *,
    name: str | None = None,
    is_admin: bool = False,
    is_active: bool = True,
    is_deleted: bool = False,
) -> int:
    """One user with `BULK_PASSWORD`, skipping Argon2 (a quarter second a hash); its id."""
    moment = utcnow()
    values = {
        "email": email,
        "name": name,
        "hashed_password": _BULK_HASH,
        "is_admin": is_admin,
        "is_active": is_active,
        "is_deleted": is_deleted,
        "created_at": moment,
        "updated_at": moment,
    }

    async def run() -> int:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(insert(User).values(values).returning(User.id))
                return result.scalar_one()
        finally:
            await engine.dispose()

    return asyncio.run(run())


def bearer_headers(
    settings: Settings, user_id: int, *, lifetime: timedelta = timedelta(minutes=5)
) -> dict[str, str]:
    """The header a login would give this user, minted by the app's own token code.

    For tests of what a token lets one do; tests of login itself log in.
    """
    token = security.create_access_token(
        subject=str(user_id), secret=settings.jwt_secret_key.get_secret_value(), lifetime=lifetime
    )
    return {"Authorization": f"Bearer {token}"}


def create_api_key(
    db_url: str,
    scopes: Sequence[Scope],
    *,
    name: str = "test",
    expires_in_days: int | None = None,
    fields: Sequence[str] | None = None,
    anonymized_only: bool = False,
) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        async with standalone_session(db_url) as session:
            key, secret = await api_keys.create(
                session,
                name=name,
                scopes=list(scopes),
                expires_in_days=expires_in_days,
                fields=fields,
                anonymized_only=anonymized_only,
            )
            return key.id, secret

    return asyncio.run(run())


def revoke_api_key(db_url: str, key_id: int) -> None:
    async def run() -> None:
        async with standalone_session(db_url) as session:
            await api_keys.revoke(session, key_id=key_id)

    asyncio.run(run())


def login(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def admin_headers(
    client: TestClient, db_url: str, email: str = "admin@example.com"
) -> dict[str, str]:
    create_user(db_url, email, password=ADMIN_PASSWORD, name="Admin", is_admin=True)
    return login(client, email, ADMIN_PASSWORD)


def execute_sql(db_url: str, sql: str) -> None:
    """One raw statement, committed: for breaking a schema on purpose."""

    async def run() -> None:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run())


def live_users(db_url: str) -> list[User]:
    """Every live user as stored, in id order: what an export must hold."""

    async def load() -> list[User]:
        async with standalone_session(db_url) as session:
            query = select(User).where(User.is_deleted.is_(False)).order_by(User.id)
            return list((await session.scalars(query)).all())

    return asyncio.run(load())
