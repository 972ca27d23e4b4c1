"""Passwords, access tokens and API-key secrets: how each is made and checked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import string
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import jwt
from pwdlib import PasswordHash

from reviewpoint.errors import TooManyRequests

_passwords = PasswordHash.recommended()  # Argon2id with pwdlib's current parameters

T = TypeVar("T")

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "rvp_"
_KEY_ALPHABET = string.ascii_letters + string.digits


# Argon2 costs about 0.1 s of CPU and 64 MiB a hash. It runs on a few threads of
# its own (the C code releases the GIL, so the event loop keeps serving), at
# most HASH_THREADS at once so logins cannot take every core, and at most
# HASH_QUEUE waiting: a flood is refused at once instead of queueing work that
# would finish long after its clients gave up.
HASH_THREADS = max(1, (os.cpu_count() or 2) // 2)
HASH_QUEUE = 8 * HASH_THREADS
_hash_pool = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="argon2")
_hash_pending = 0
_hash_pending_lock = threading.Lock()  # apps in tests run loops on several threads


class PasswordWorkBusy(TooManyRequests):
    """More password hashes are waiting than HASH_QUEUE allows."""

    def __init__(self) -> None:
        super().__init__("Too many password checks in progress; retry shortly", retry_after=1)


async def _hash_work(function: Callable[..., T], *args: str) -> T:
    global _hash_pending
    with _hash_pending_lock:
        if _hash_pending >= HASH_THREADS + HASH_QUEUE:
            raise PasswordWorkBusy
        _hash_pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_hash_pool, function, *args)
    finally:
        with _hash_pending_lock:
            _hash_pending -= 1


def hash_password(password: str) -> str:
    """Blocking: for code outside the event loop (seeding, tests)."""
    return _passwords.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    """Blocking: for code outside the event loop (the CLI)."""
    return _passwords.verify(password, hashed)


async def hash_password_in_worker(password: str) -> str:
    return await _hash_work(_passwords.hash, password)


async def check_password(password: str, hashed: str | None) -> bool:
    """Check a password; with no hash (unknown email) spend the same time and fail.

    Equal time for known and unknown emails keeps timing from telling which exist.
    """
    if hashed is None:
        await _hash_work(_passwords.verify, "not-the-password", _DUMMY_HASH)
        return False
    return await _hash_work(_passwords.verify, password, hashed)


_DUMMY_HASH = _passwords.hash("reviewpoint-dummy")


def create_access_token(*, subject: str, secret: str, lifetime: timedelta) -> str:
    now = datetime.now(UTC)
    claims = {"sub": subject, "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def read_access_token(token: str, *, secret: str) -> str | None:
    """The token's subject, or None when it is forged, malformed or expired."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) else None


@dataclass(frozen=True)
class NewApiKey:
    prefix: str
    secret: str
    secret_hash: str


def generate_api_key() -> NewApiKey:
    """`rvp_<public id>_<secret>`: the public id finds the row, the rest proves possession.

    The id is 12 hex characters (48 bits, enough to look up without collisions in
    practice); the secret part is 43 base62 characters, 256 bits from `secrets`,
    with no `-` or `_` so a double-click selects the whole key. Only the SHA-256
    of the whole key is stored: the entropy makes a slow hash unnecessary.
    """
    public_id = secrets.token_hex(6)
    random_part = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(43))
    secret = f"{API_KEY_PREFIX}{public_id}_{random_part}"
    return NewApiKey(prefix=public_id, secret=secret, secret_hash=hash_api_key(secret))


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_prefix(secret: str) -> str | None:
    """The public id of a presented key, or None when it is not shaped like ours.

    Only the exact shape `generate_api_key` makes gets through, so a malformed
    header (NUL, non-hex, any length) is a plain 401 that never reaches the
    database.
    """
    match = _API_KEY_SHAPE.fullmatch(secret)
    return match[1] if match else None


_API_KEY_SHAPE = re.compile(rf"{API_KEY_PREFIX}([0-9a-f]{{12}})_[A-Za-z0-9]{{43}}")


def api_key_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(secret), stored_hash)
