"""Bulk synthetic users for demos and benchmarks, generated inside the database.

One INSERT ... SELECT per batch: a million rows take seconds, not the hours a
per-user Argon2 hash would. Every seeded user shares one hash of a random
password nobody knows, so none of them can log in.

Names cycle through the shapes that break naive CSV writers (commas, quotes,
line breaks, non-Latin scripts, emoji, formula-like prefixes, missing names),
so benchmarks exercise the same quoting work real data does.

The run takes one change number for all its rows (`change_seq`, see
`exports/cursor.py`), as one transaction, so the per-row triggers that number
other writes are skipped; the counter row stays locked until the run commits.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reviewpoint import security
from reviewpoint.db import UTCDateTime, utcnow
from reviewpoint.users.models import User, change_counter

BATCH_ROWS = 100_000

# (SQL expression for the name given the row number n, PostgreSQL / SQLite spelling)
_NAME_CASES = (
    "'Seed User ' || n",
    "'Doe, Jane ' || n",
    "'Ann \"Nancy\" O''Neil ' || n",
    "NULL",
    "'Zoë Ærøskøbing ' || n",
    "'مستخدم ' || n",
    "'用户 ' || n || ' 🚀'",
    "'=HYPERLINK(\"x\") ' || n",
    "'Line one' || {newline} || 'line two ' || n",
    "'-Minus ' || n",
)


def _name_expression(dialect: str) -> str:
    newline = "E'\\n'" if dialect == "postgresql" else "char(10)"
    whens = " ".join(
        f"WHEN {index} THEN {case.format(newline=newline)}"
        for index, case in enumerate(_NAME_CASES)
    )
    return f"CASE n % {len(_NAME_CASES)} {whens} END"


def _batch_statement(dialect: str) -> str:
    columns = (
        "email, hashed_password, name, is_active, is_admin, is_deleted, created_at, updated_at, "
        "change_seq"
    )
    values = (
        "'seed' || n || '@seed.example', :hashed, "
        f"{_name_expression(dialect)}, n % 17 <> 0, n % 1000 = 0, false, :now, :now, "
        "CAST(:seq AS bigint)"
    )
    # The casts give the bounds a type: asyncpg cannot pick one for generate_series.
    first, last = "CAST(:first AS integer)", "CAST(:last AS integer)"
    if dialect == "postgresql":
        return (
            f"INSERT INTO users ({columns}) "
            f"SELECT {values} FROM generate_series({first}, {last}) AS n"
        )
    return (
        f"WITH RECURSIVE seq(n) AS "
        f"(SELECT {first} UNION ALL SELECT n + 1 FROM seq WHERE n < {last}) "
        f"INSERT INTO users ({columns}) SELECT {values} FROM seq"
    )


async def seed_users(
    engine: AsyncEngine, count: int, *, progress: Callable[[int], None] | None = None
) -> int:
    """Add `count` users after the highest existing id; returns how many were added."""
    hashed = security.hash_password(secrets.token_urlsafe(32))
    statement = text(_batch_statement(engine.dialect.name)).bindparams(
        bindparam("now", type_=UTCDateTime())
    )
    async with engine.begin() as connection:
        start = (await connection.scalar(select(func.coalesce(func.max(User.id), 0)))) or 0
        seq = await connection.scalar(
            update(change_counter)
            .values(value=change_counter.c.value + 1)
            .returning(change_counter.c.value)
        )
        done = 0
        while done < count:
            size = min(BATCH_ROWS, count - done)
            first = start + done + 1
            await connection.execute(
                statement,
                {
                    "first": first,
                    "last": first + size - 1,
                    "hashed": hashed,
                    "now": utcnow(),
                    "seq": seq,
                },
            )
            done += size
            if progress is not None:
                progress(size)
    return done
