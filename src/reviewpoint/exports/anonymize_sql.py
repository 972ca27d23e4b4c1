"""Anonymized exports in SQL: the pseudonyms of `anonymize.py`, computed where the rows are.

An anonymized chunk reads the same filters and id range from a derived table
named `users` whose columns hold the pseudonyms (and day-truncated times), so
every format's SQL runs on it unchanged. The derived table is fenced
(PostgreSQL `OFFSET 0`, SQLite `LIMIT -1 OFFSET 0`) so neither planner folds
it into the format's SQL, which names a column up to six times: each HMAC is
computed once per row.

- PostgreSQL: HMAC-SHA256 from the built-in `sha256()` (11+), as
  `sha256(outer_block || sha256(inner_block || message))` (RFC 2104), no
  pgcrypto. The key's blocks are not inlined into the COPY text (which
  `pg_stat_activity` and statement logs show): each export connection sets
  them with bind parameters as transaction-local settings inside its
  snapshot (`pg_setup`), and a one-row subquery decodes them once per chunk.
- SQLite has no hash function: each export connection registers two
  deterministic Python functions, closures over the key (`sqlite_setup`).
"""

from __future__ import annotations

from typing import Any

from reviewpoint.exports.anonymize import (
    EMAIL_BYTES,
    EMAIL_DOMAIN,
    EMAIL_PREFIX,
    NAME_BYTES,
    NAME_PREFIX,
    Anonymization,
    pseudonym_email,
    pseudonym_name,
)
from reviewpoint.exports.columns import Column
from reviewpoint.users.models import email_key_sql

_INNER_SETTING = "reviewpoint.anonymize_inner"
_OUTER_SETTING = "reviewpoint.anonymize_outer"
# Bind parameters only: the statement text holds no key material.
PG_SETUP = (
    f"SELECT set_config('{_INNER_SETTING}', $1, true), set_config('{_OUTER_SETTING}', $2, true)"
)
_PG_KEY_ROW = (
    f"(SELECT decode(current_setting('{_INNER_SETTING}'), 'hex') AS inner_block, "
    f"decode(current_setting('{_OUTER_SETTING}'), 'hex') AS outer_block OFFSET 0) AS anonymize_key"
)
_SQLITE_EMAIL = "reviewpoint_pseudonym_email"
_SQLITE_NAME = "reviewpoint_pseudonym_name"
_TIMESTAMPS = ("timestamp", "optional_timestamp")


def pg_setup_arguments(anonymization: Anonymization) -> tuple[str, str]:
    """The values `PG_SETUP` binds: the key's padded blocks, in hex."""
    key = anonymization.key
    return key.inner_block.hex(), key.outer_block.hex()


def _pg_hmac(message: str, length: int) -> str:
    digest = (
        "sha256(anonymize_key.outer_block || "
        f"sha256(anonymize_key.inner_block || convert_to({message}, 'UTF8')))"
    )
    return f"encode(substring({digest} from 1 for {length}), 'hex')"


def _pg_column(name: str, kind: str, anonymization: Anonymization) -> str:
    if name == "email":
        hashed = _pg_hmac(email_key_sql("postgresql", "users.email"), EMAIL_BYTES)
        return f"'{EMAIL_PREFIX}' || {hashed} || '@{EMAIL_DOMAIN}' AS email"
    if name == "name":
        hashed = _pg_hmac("'name:' || users.id", NAME_BYTES)
        return (
            "CASE WHEN users.name IS NULL OR users.name = '' THEN users.name "
            f"ELSE '{NAME_PREFIX}' || {hashed} END AS name"
        )
    if anonymization.day and kind in _TIMESTAMPS:
        # date_trunc's zone argument: a day in UTC, whatever the session's TimeZone.
        return f"date_trunc('day', users.{name}, 'UTC') AS {name}"
    return f"users.{name}"


def pg_source(columns: tuple[Column, ...], anonymization: Anonymization, where: str) -> str:
    """The derived `users` of a PostgreSQL chunk: the rows `where` selects, anonymized."""
    selected = ", ".join(_pg_column(name, kind, anonymization) for name, kind in _with_id(columns))
    return (
        f"(SELECT {selected} FROM users, {_PG_KEY_ROW} WHERE {where} "
        "ORDER BY users.id OFFSET 0) AS users"
    )


def _sqlite_column(name: str, kind: str, anonymization: Anonymization) -> str:
    if name == "email":
        return f"{_SQLITE_EMAIL}(email) AS email"
    if name == "name":
        return f"{_SQLITE_NAME}(id, name) AS name"
    if anonymization.day and kind in _TIMESTAMPS:
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): the day and midnight.
        return f"substr({name}, 1, 10) || ' 00:00:00.000000' AS {name}"
    return name


def sqlite_source(
    columns: tuple[Column, ...], anonymization: Anonymization, users: str, where: str, order: str
) -> str:
    """The derived `users` of a SQLite chunk: the rows `where` selects from `users`, anonymized.

    `order`: the chunk's ORDER BY; with the fence, the rows reach the
    chunk's `group_concat` in that order.
    """
    selected = ", ".join(
        _sqlite_column(name, kind, anonymization) for name, kind in _with_id(columns)
    )
    return f"(SELECT {selected} FROM {users} WHERE {where} ORDER BY {order} LIMIT -1 OFFSET 0)"


def sqlite_functions(anonymization: Anonymization) -> list[tuple[str, int, Any]]:
    """The functions `sqlite_source` calls, as (name, argument count, function)."""
    key = anonymization.key

    def email(value: str | None) -> str | None:
        return None if value is None else pseudonym_email(key, value)

    def name(user_id: int, value: str | None) -> str | None:
        return pseudonym_name(key, user_id, value)

    return [(_SQLITE_EMAIL, 1, email), (_SQLITE_NAME, 2, name)]


def _with_id(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """The columns, `id` among them: the chunk range, the order and names need it."""
    if any(name == "id" for name, _ in columns):
        return columns
    return (("id", "id"), *columns)
