"""Console sessions: a signed cookie naming a server-side row, and the CSRF tokens tied to it.

The cookie holds a random token and its HMAC under the app's signing secret,
so a forged or altered cookie is refused before any query. The database keeps
only the token's SHA-256 with the admin and an expiry: signing out deletes the
row, which ends the session on every worker at once (a signed cookie alone
would stay valid until it expired).

CSRF: each state-changing form carries a token derived from the session's
own token (HMAC, nothing stored); the sign-in form, which has no session yet,
carries one derived from a random cookie set with the form (double submit).
With `SameSite=Strict` on both cookies a cross-site page cannot even send
them; the tokens are the second lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint.console.models import ConsoleSession
from reviewpoint.db import utcnow
from reviewpoint.users import repository as users
from reviewpoint.users.models import User

SESSION_COOKIE = "rvp_console"
SIGN_IN_COOKIE = "rvp_console_sign_in"
# A working day: long enough not to interrupt one, short enough that a
# forgotten browser is signed out by the next morning.
SESSION_LIFETIME = timedelta(hours=8)
# The sign-in form's token lives as long as an operator may leave the form open.
SIGN_IN_LIFETIME = timedelta(hours=1)


def _mac(secret: str, purpose: str, value: str) -> str:
    digest = hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: str, token: str) -> str:
    """The cookie value: the token and its signature."""
    return f"{token}.{_mac(secret, 'console-session', token)}"


def unsign(secret: str, value: str) -> str | None:
    """The token of a cookie this app signed, else None."""
    token, _, signature = value.partition(".")
    if not token or not hmac.compare_digest(signature, _mac(secret, "console-session", token)):
        return None
    return token


def csrf_token(secret: str, token: str) -> str:
    """The CSRF token of the session (or sign-in form) whose token is `token`."""
    return _mac(secret, "console-csrf", token)


def csrf_valid(secret: str, token: str, submitted: str | None) -> bool:
    return submitted is not None and hmac.compare_digest(submitted, csrf_token(secret, token))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SignedIn:
    """An admin with a live session, and that session's token (for its CSRF token)."""

    user: User
    token: str
    expires_at: datetime


async def start(session: AsyncSession, *, user_id: int, now: datetime | None = None) -> SignedIn:
    """A new session for `user_id`; the admin's expired sessions are swept on the way."""
    now = now or utcnow()
    await session.execute(
        delete(ConsoleSession).where(
            ConsoleSession.user_id == user_id, ConsoleSession.expires_at <= now
        )
    )
    token = new_token()
    row = ConsoleSession(
        token_hash=_hash(token), user_id=user_id, created_at=now, expires_at=now + SESSION_LIFETIME
    )
    session.add(row)
    await session.flush()
    user = await users.get_live(session, user_id=user_id)
    assert user is not None
    return SignedIn(user=user, token=token, expires_at=row.expires_at)


async def find(session: AsyncSession, *, token: str) -> SignedIn | None:
    """The session of `token` if it is live and its user still an active admin."""
    row = (
        await session.execute(
            select(ConsoleSession).where(ConsoleSession.token_hash == _hash(token))
        )
    ).scalar_one_or_none()
    if row is None or row.expires_at <= utcnow():
        return None
    user = await users.get_live(session, user_id=row.user_id)
    if user is None or not user.is_active or not user.is_admin:
        return None
    return SignedIn(user=user, token=token, expires_at=row.expires_at)


async def end(session: AsyncSession, *, token: str) -> None:
    """Sign out: the row goes, so the cookie no longer opens anything anywhere."""
    await session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _hash(token)))
