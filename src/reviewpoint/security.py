"""Passwords, access tokens and API-key secrets: how each is made and checked."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash

_passwords = PasswordHash.recommended()  # Argon2id with pwdlib's current parameters

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "rvp_"
_KEY_ALPHABET = string.ascii_letters + string.digits


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    return _passwords.verify(password, hashed)


def dummy_verify() -> None:
    """Spend a hash's time on unknown emails so timing does not reveal which exist."""
    _passwords.verify("not-the-password", _DUMMY_HASH)


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
