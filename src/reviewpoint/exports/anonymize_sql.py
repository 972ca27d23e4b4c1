"""Anonymized exports in SQL: the pseudonyms of `anonymize.py`, computed where the rows are.

An anonymized chunk reads the same filters and id range from a derived table
named `users` whose columns hold the pseudonyms (and day-truncated times), so
every format's SQL runs on it unchanged. Its inner level is fenced
(PostgreSQL `OFFSET 0`, SQLite `LIMIT -1 OFFSET 0`) so neither planner folds it
into the outer levels: it computes the user's one HMAC (`pseudonym`) once per
row, and the unfenced outer level cuts the email and the name from it. The
formats read both as `pseudonym` columns (`anonymize.pseudonym_kinds`), named
once each, not up to eight times as text is.

- PostgreSQL: HMAC-SHA256 from the built-in `sha256()` (11+), as
  `sha256(outer_block || sha256(inner_block || message))` (RFC 2104), no
  pgcrypto. The key's blocks are not inlined into the COPY text (which
  `pg_stat_activity` and statement logs show): each export connection sets
  them with bind parameters as transaction-local settings inside its
  snapshot (`pg_setup`), and each chunk's statement decodes them once.
- SQLite has no hash function: each export connection registers one
  deterministic Python function, a closure over the key (`sqlite_setup`),
  called once per row with the email key SQLite's `lower()` already folded.
"""

from __future__ import annotations

from typing import Any

from reviewpoint.exports.anonymize import (
    EMAIL_BYTES,
    EMAIL_DOMAIN,
    EMAIL_PREFIX,
    NAME_BYTES,
    NAME_PREFIX,
    PSEUDONYM_BYTES,
    Anonymization,
)
from reviewpoint.exports.columns import Column
from reviewpoint.users.models import email_key_sql

_INNER_SETTING = "reviewpoint.anonymize_inner"
_OUTER_SETTING = "reviewpoint.anonymize_outer"
# Bind parameters only: the statement text holds no key material.
PG_SETUP = (
    f"SELECT set_config('{_INNER_SETTING}', $1, true), set_config('{_OUTER_SETTING}', $2, true)"
)
# Uncorrelated scalar subqueries: PostgreSQL runs each once per statement (an
# InitPlan), not per row, and no join is needed to reach them.
_PG_INNER_BLOCK = f"(SELECT decode(current_setting('{_INNER_SETTING}'), 'hex'))"
_PG_OUTER_BLOCK = f"(SELECT decode(current_setting('{_OUTER_SETTING}'), 'hex'))"
_SQLITE_PSEUDONYM = "reviewpoint_pseudonym"
_TIMESTAMPS = ("timestamp", "optional_timestamp")


def pg_setup_arguments(anonymization: Anonymization) -> tuple[str, str]:
    """The values `PG_SETUP` binds: the key's padded blocks, in hex."""
    key = anonymization.key
    return key.inner_block.hex(), key.outer_block.hex()


def _pseudonym_columns(columns: tuple[Column, ...]) -> list[str]:
    """The outer level: the email and the name cut from the inner level's `pseudonym`."""
    selected = []
    for name, _ in _with_id(columns):
        if name == "email":
            email_digits = f"substr(pseudonym, 1, {2 * EMAIL_BYTES})"
            selected.append(f"'{EMAIL_PREFIX}' || {email_digits} || '@{EMAIL_DOMAIN}' AS email")
        elif name == "name":
            name_digits = f"substr(pseudonym, {2 * EMAIL_BYTES + 1}, {2 * NAME_BYTES})"
            selected.append(
                "CASE WHEN name IS NULL OR name = '' THEN name "
                f"ELSE '{NAME_PREFIX}' || {name_digits} END AS name"
            )
        else:
            selected.append(name)
    return selected


def _needs_pseudonym(columns: tuple[Column, ...]) -> bool:
    return any(name in ("email", "name") for name, _ in columns)


def _pg_inner_column(name: str, kind: str, anonymization: Anonymization) -> str:
    if anonymization.day and kind in _TIMESTAMPS:
        # date_trunc's zone argument: a day in UTC, whatever the session's TimeZone.
        return f"date_trunc('day', users.{name}, 'UTC') AS {name}"
    return f"users.{name}"


def _pg_pseudonym() -> str:
    message = f"convert_to({email_key_sql('postgresql', 'users.email')}, 'UTF8')"
    digest = f"sha256({_PG_OUTER_BLOCK} || sha256({_PG_INNER_BLOCK} || {message}))"
    return f"encode(substring({digest} from 1 for {PSEUDONYM_BYTES}), 'hex') AS pseudonym"


def pg_source(columns: tuple[Column, ...], anonymization: Anonymization, where: str) -> str:
    """The derived `users` of a PostgreSQL chunk: the rows `where` selects, anonymized."""
    inner = [_pg_inner_column(name, kind, anonymization) for name, kind in _with_id(columns)]
    if _needs_pseudonym(columns):
        inner.append(_pg_pseudonym())
    fenced = (
        f"(SELECT {', '.join(inner)} FROM users WHERE {where} ORDER BY users.id OFFSET 0) AS users"
    )
    return f"(SELECT {', '.join(_pseudonym_columns(columns))} FROM {fenced}) AS users"


def _sqlite_inner_column(name: str, kind: str, anonymization: Anonymization) -> str:
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
    inner = [_sqlite_inner_column(name, kind, anonymization) for name, kind in _with_id(columns)]
    if _needs_pseudonym(columns):
        key = email_key_sql("sqlite", "email")
        inner.append(f"{_SQLITE_PSEUDONYM}({key}) AS pseudonym")
    fenced = (
        f"SELECT {', '.join(inner)} FROM {users} WHERE {where} ORDER BY {order} LIMIT -1 OFFSET 0"
    )
    return f"(SELECT {', '.join(_pseudonym_columns(columns))} FROM ({fenced}))"


def sqlite_functions(anonymization: Anonymization) -> list[tuple[str, int, Any]]:
    """The function `sqlite_source` calls, as (name, argument count, function)."""
    digest = anonymization.key.digest

    def pseudonym(folded_email: str) -> str:
        # The email key, folded by SQLite's ASCII-only lower() (`email_key_sql`).
        return digest(folded_email.encode())[:PSEUDONYM_BYTES].hex()

    return [(_SQLITE_PSEUDONYM, 1, pseudonym)]


def _with_id(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """The columns, `id` among them: the chunk range, the order and names need it."""
    if any(name == "id" for name, _ in columns):
        return columns
    return (("id", "id"), *columns)
