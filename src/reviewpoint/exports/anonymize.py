"""Anonymized exports: deterministic pseudonyms for emails and names, in plain Python.

With `anonymize=true` an export's emails and names are replaced by keyed
pseudonyms; ids, flags and timestamps stay (`anonymize=day` also truncates
every timestamp to its day, 00:00:00Z).

One HMAC-SHA256 per user, of the email key (the address with ASCII letters
lowered, the expression that makes addresses unique: `users.models.email_key_sql`),
gives both pseudonyms:

- email: `u-<hex of digest bytes 0-9>@example.invalid`. Two spellings of one
  address get one pseudonym, distinct addresses distinct ones (80 bits: for
  1,000,000 users the chance of any collision is about 4e-13).
- name: `User <hex of digest bytes 10-15>`, from the address and not the name,
  so equal names do not show as equal pseudonyms; a NULL or empty name stays
  NULL or empty. Deriving it from the same digest halves the hashing (one HMAC
  a row, not two): the measured difference between an anonymized export within
  2x of a plain one and not.

Both are HMACs: without the key nobody can compute, reverse or confirm a
pseudonym by hashing a guessed address; with the same key every export gives
a user the same pseudonyms (joins and staging fixtures keep working); a new
key makes old and new exports unlinkable.

This module is the reference. The databases compute the same values in SQL
(`anonymize_sql.py`), and tests hold both equal byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, Request

from reviewpoint.config import MIN_PROD_SECRET_LENGTH, Settings, SettingsError
from reviewpoint.errors import AppError, FeatureDisabled
from reviewpoint.exports.columns import Column
from reviewpoint.features.defaults import is_enabled
from reviewpoint.features.flags import FeatureFlagsDep

log = logging.getLogger("reviewpoint.exports")

AnonymizeMode = Literal["false", "true", "day"]
FEATURE = "users:export_anonymized"
EMAIL_DOMAIN = "example.invalid"
EMAIL_PREFIX = "u-"
EMAIL_BYTES = 10
NAME_PREFIX = "User "
NAME_BYTES = 6
PSEUDONYM_BYTES = EMAIL_BYTES + NAME_BYTES
_BLOCK = 64  # SHA-256's block size, the length of HMAC's padded key (RFC 2104)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class PseudonymKey:
    """An HMAC-SHA256 key, kept as its two padded blocks (RFC 2104).

    The blocks are what the databases need (`anonymize_sql.py`), and hashing
    them once here spares every row one SHA-256 block in Python.
    """

    def __init__(self, secret: str) -> None:
        key = secret.encode()
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self.inner_block = bytes(byte ^ 0x36 for byte in key)
        self.outer_block = bytes(byte ^ 0x5C for byte in key)
        self._inner = hashlib.sha256(self.inner_block)
        self._outer = hashlib.sha256(self.outer_block)

    def __repr__(self) -> str:
        return "PseudonymKey(**********)"

    @property
    def fingerprint(self) -> str:
        """Names the key without revealing it (export ETags change when it does)."""
        return hashlib.sha256(b"reviewpoint fingerprint:" + self.outer_block).hexdigest()[:16]

    def digest(self, message: bytes) -> bytes:
        """HMAC-SHA256 of `message` (equal to `hmac.digest(key, message, 'sha256')`)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def email_key(email: str) -> str:
    """What two addresses share when they are the same: ASCII letters lowered."""
    # lower() is 15 times faster than translate() (SQLite calls this per row),
    # and on ASCII text it folds ASCII letters only.
    return email.lower() if email.isascii() else email.translate(_ASCII_LOWER)


def pseudonym_digest(key: PseudonymKey, email: str) -> bytes:
    """The digest bytes both pseudonyms of the user with address `email` come from."""
    return key.digest(email_key(email).encode())[:PSEUDONYM_BYTES]


def pseudonym_email(key: PseudonymKey, email: str) -> str:
    digest = pseudonym_digest(key, email)
    return f"{EMAIL_PREFIX}{digest[:EMAIL_BYTES].hex()}@{EMAIL_DOMAIN}"


def pseudonym_name(key: PseudonymKey, email: str, name: str | None) -> str | None:
    """The pseudonym of the name of the user whose address is `email`."""
    if not name:
        return name
    return NAME_PREFIX + pseudonym_digest(key, email)[EMAIL_BYTES:].hex()


def start_of_day(value: datetime) -> datetime:
    moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Anonymization:
    """How one export hides who its users are: the key, and whether times keep only the day."""

    key: PseudonymKey = field(repr=False)
    day: bool = False

    def row(self, columns: tuple[Column, ...], row: Mapping[str, object]) -> dict[str, object]:
        """`row` as an anonymized export holds it (the reference; `row` needs `email`)."""
        anonymized = dict(row)
        for name, kind in columns:
            value = row[name]
            if name == "email":
                assert isinstance(value, str)
                anonymized[name] = pseudonym_email(self.key, value)
            elif name == "name":
                email = row["email"]
                assert isinstance(email, str) and (value is None or isinstance(value, str))
                anonymized[name] = pseudonym_name(self.key, email, value)
            elif self.day and kind in ("timestamp", "optional_timestamp") and value is not None:
                assert isinstance(value, datetime)
                anonymized[name] = start_of_day(value)
        return anonymized


def pseudonym_kinds(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """`columns` as an anonymized export's SQL reads them: emails and names are pseudonyms.

    A pseudonym is ASCII letters, digits, `-`, `@`, `.` and a space, so no format
    quotes, escapes or guards it: its SQL names the value once instead of up to
    eight times (CSV's quoting tests), which on SQLite is half the export's time.
    """
    return tuple(
        (name, "pseudonym" if name in ("email", "name") else kind) for name, kind in columns
    )


class AnonymizationUnavailable(AppError):
    """Anonymized exports are switched on at runtime, but this server has no key."""

    status_code = 503


@dataclass(frozen=True)
class Pseudonyms:
    """What a caller may get: the server's key, if any, and whether the feature is on."""

    key: PseudonymKey | None
    enabled: bool = True

    def anonymization(self, mode: AnonymizeMode) -> Anonymization | None:
        """The anonymization `anonymize=<mode>` asks for; None for `false`.

        403 while the feature is off; 503 when an admin switched it on for a
        server started without a key (start-up refuses that combination).
        """
        if mode == "false":
            return None
        if not self.enabled:
            raise FeatureDisabled(FEATURE)
        if self.key is None:
            raise AnonymizationUnavailable(
                "Anonymized exports need REVIEWPOINT_ANONYMIZE_KEY, which this server "
                "was started without"
            )
        return Anonymization(key=self.key, day=mode == "day")


def get_pseudonyms(request: Request, flags: FeatureFlagsDep) -> Pseudonyms:
    key: PseudonymKey | None = request.app.state.pseudonym_key
    return Pseudonyms(key=key, enabled=flags.is_enabled(FEATURE))


PseudonymsDep = Annotated[Pseudonyms, Depends(get_pseudonyms)]


def anonymize_secret(settings: Settings) -> str | None:
    """The pseudonym key: the configured one, a random one in dev/test, else refused.

    Required unless REVIEWPOINT_ENV is dev or test (unset is as strict as prod,
    as for the signing key) while anonymized exports are on by the environment;
    with them off there, None (an admin switching them on later gets a 503). A
    random key lives as long as the process: pseudonyms change on restart.
    """
    if settings.anonymize_key is not None:
        return settings.anonymize_key.get_secret_value()
    if settings.env in ("dev", "test"):
        return secrets.token_urlsafe(32)
    if is_enabled(settings, FEATURE):
        raise SettingsError(
            "invalid configuration: REVIEWPOINT_ANONYMIZE_KEY must be set to a random "
            f"string of at least {MIN_PROD_SECRET_LENGTH} characters while anonymized "
            "exports are enabled (or set REVIEWPOINT_FEATURE_USERS_EXPORT_ANONYMIZED=false); "
            "with REVIEWPOINT_ENV=dev or test a random one is generated"
        )
    return None


def pseudonym_key(settings: Settings) -> PseudonymKey | None:
    """`anonymize_secret` as a key, with a warning when it is a random one."""
    secret = anonymize_secret(settings)
    if secret is None:
        return None
    if settings.anonymize_key is None:
        log.warning(
            "no REVIEWPOINT_ANONYMIZE_KEY: anonymized exports use a random key, so "
            "their pseudonyms change when this process restarts"
        )
    return PseudonymKey(secret)
