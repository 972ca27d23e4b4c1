"""Which rows an export holds, read chunk by chunk as bytes the database builds.

An export is the live (not deleted) users that pass its filters (`Filters`),
in id order; an incremental sync (`cursor.py`, `Filters.since`) is instead
every user changed after its cursor, deleted or not. A chunk is the rows
with `after < id <= end`, where `end` is the id `rows` selected rows further
on (`chunk_end`, an index-only count on `ix_users_live_id` when no filter
narrows it). Knowing each chunk's end before
reading it is what lets several connections read chunks at once
(`pipeline.py`). `after_id` is simply where the first chunk starts; `limit`
caps the rows the chunks cover (`pipeline.py` counts them). When the count
taken before the first byte says the rest fits one chunk, no chunk end is
looked up at all (`fits`): a sync of a few changes reads the change index only.

Formatting happens in the database because per-row work in Python (objects,
`csv.writer`, `strftime`) costs several times the query. The format supplies
the SQL of one record (`formats/`); this module wraps it in each dialect's
chunk query:

- PostgreSQL: `COPY (SELECT <record> ... ORDER BY id) TO STDOUT` on the asyncpg
  connection, in C. COPY takes no parameters: values are inlined (`_Inlined`).
- SQLite: the records joined by `group_concat` over the id-ordered rows
  (SQLite does not flatten an ordered subquery into an aggregate, so the
  order holds) and returned as one BLOB: one step without the GIL, no per-row
  Python objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from reviewpoint.db import UTCDateTime
from reviewpoint.exports import anonymize_sql
from reviewpoint.exports.anonymize import Anonymization
from reviewpoint.exports.columns import Column
from reviewpoint.exports.formats.base import PgRows, SqliteRows
from reviewpoint.users.models import email_key_sql


@dataclass(frozen=True)
class Filters:
    """Which live users an export holds; None (and 0) select everyone."""

    email: str | None = None
    is_active: bool | None = None
    is_admin: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_since: datetime | None = None
    after_id: int = 0
    limit: int | None = None
    # Incremental sync: the users changed after this change number, deleted ones
    # included, instead of the live ones (`cursor.py`).
    since: int | None = None


@dataclass(frozen=True)
class Chunk:
    body: bytes
    rows: int


class ChunkReader(Protocol):
    """Reads one export's chunks on one connection inside the export's snapshot."""

    async def chunk_end(self, after: int, rows: int) -> int | None:
        """The last id of the `rows` selected rows after `after`; None if fewer remain."""

    async def read(self, after: int, end: int | None) -> Chunk:
        """The records of the selected users with `after < id <= end` (no end: all)."""


class _Value(Protocol):
    """How a filter's value enters a statement: a bind parameter or a literal."""

    def __call__(self, name: str, value: object) -> str: ...


def _conditions(dialect: str, filters: Filters, value: _Value) -> list[str]:
    """The filters as SQL conditions, ANDed; the chunk range comes on top.

    Timestamps compare as stored: `timestamptz` on PostgreSQL, UTC text that
    sorts in time order on SQLite.
    """
    if filters.since is not None:
        # Incremental sync: the rows changed after the cursor replace the live ones.
        found = [f"change_seq > {value('since', filters.since)}"]
    else:
        found = ["is_deleted = false" if dialect == "postgresql" else "is_deleted = 0"]
    if filters.email is not None:
        wanted = email_key_sql(dialect, value("email", filters.email))
        found.append(f"{email_key_sql(dialect, 'email')} = {wanted}")
    if filters.is_active is not None:
        found.append(f"is_active = {value('is_active', filters.is_active)}")
    if filters.is_admin is not None:
        found.append(f"is_admin = {value('is_admin', filters.is_admin)}")
    if filters.created_after is not None:
        found.append(f"created_at > {value('created_after', filters.created_after)}")
    if filters.created_before is not None:
        found.append(f"created_at < {value('created_before', filters.created_before)}")
    if filters.updated_since is not None:
        found.append(f"updated_at >= {value('updated_since', filters.updated_since)}")
    # The count, the chunk ends and every dialect's chunk query all read this list.
    return found


class _Bound:
    """Values as bind parameters of a SQLAlchemy `text()` statement."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def __call__(self, name: str, value: object) -> str:
        self.values[name] = value
        return f":{name}"

    def statement(self, sql: str) -> TextClause:
        # Timestamps go through the column type, which stores SQLite's as UTC text.
        timestamps = [
            bindparam(name, type_=UTCDateTime())
            for name, value in self.values.items()
            if isinstance(value, datetime)
        ]
        return text(sql).bindparams(*timestamps)


class _Inlined:
    """Values as SQL literals, for PostgreSQL's COPY.

    Each kind is rendered from a validated Python value: ints by `int()`,
    timestamps from `isoformat()`, strings as the server itself quoted them
    (`quote_literal`, in `literals`).
    """

    def __init__(self, literals: Mapping[str, str]) -> None:
        self._literals = literals

    def __call__(self, name: str, value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(int(value))
        if isinstance(value, datetime):
            return f"'{value.astimezone(UTC).isoformat()}'::timestamptz"
        return self._literals[name]


def _where(dialect: str, filters: Filters, value: _Value) -> str:
    return " AND ".join(_conditions(dialect, filters, value))


def _id_column(dialect: str, filters: Filters, *, few_rows: bool) -> str:
    """How the chunk range names `id`: `+id` keeps SQLite off the id index.

    SQLite's planner has no statistics on value ranges, and given `id > ?` it
    walks ids (and, to spare a sort, even with `ORDER BY id` alone) when a time
    filter selects ten rows of a million that its index would find at once.
    When the rows are few (or only counted), `+id` lets it take the time index
    and sort what it finds; when they are many,
    walking ids in order is what reads them in chunks without sorting
    everything again for each. PostgreSQL's planner weighs both itself.
    """
    # A sync's change number is as selective as a time (`ix_users_change_seq`).
    timed = (filters.created_after, filters.created_before, filters.updated_since, filters.since)
    if dialect == "sqlite" and few_rows and any(moment is not None for moment in timed):
        return "+id"
    return "id"


async def count_rows(connection: AsyncConnection, filters: Filters) -> int:
    """How many records the export holds, in the snapshot `connection` reads.

    With a limit the count stops there: a preview of 10 never counts a million.
    """
    dialect = connection.dialect.name
    bound = _Bound()
    where = _where(dialect, filters, bound)
    limit = "" if filters.limit is None else f" LIMIT {int(filters.limit)}"
    id_column = _id_column(dialect, filters, few_rows=True)
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM users WHERE {where} "
        f"AND {id_column} > {int(filters.after_id)}{limit}) AS selected"
    )
    rows: int = (await connection.execute(bound.statement(sql), bound.values)).scalar_one()
    return rows


class _Chunks:
    """What both dialects share: where each chunk ends.

    `fits`: the export's count says every row left is one chunk, so no chunk
    end is looked up. A sync usually holds a few rows of a large table: found
    by walking the id index, its last chunk's end would cost a scan of the rest
    of the table (0.7 s on 1,000,000 SQLite rows for 3 changes).
    """

    def __init__(
        self, connection: AsyncConnection, filters: Filters, *, id_column: str, fits: bool
    ) -> None:
        self._connection = connection
        self._fits = fits
        bound = _Bound()
        where = _where(connection.dialect.name, filters, bound)
        self._bound = bound
        self._boundary = bound.statement(
            f"SELECT id FROM users WHERE {where} AND {id_column} > :after "
            f"ORDER BY {id_column} LIMIT 1 OFFSET :skip"
        )

    def _values(self, **values: object) -> dict[str, object]:
        return {**self._bound.values, **values}

    async def chunk_end(self, after: int, rows: int) -> int | None:
        if self._fits:
            return None
        values = self._values(after=after, skip=rows - 1)
        end: int | None = (await self._connection.execute(self._boundary, values)).scalar()
        return end


@dataclass(frozen=True)
class Anonymized:
    """An anonymized export's chunks: its columns and how they are anonymized."""

    columns: tuple[Column, ...]
    anonymization: Anonymization


class PostgresChunks(_Chunks):
    """Chunks by COPY on the asyncpg connection under a SQLAlchemy snapshot."""

    def __init__(
        self,
        connection: AsyncConnection,
        driver: asyncpg.Connection,
        filters: Filters,
        rows: PgRows,
        literals: Mapping[str, str],
        *,
        fits: bool,
        anonymized: Anonymized | None = None,
    ) -> None:
        super().__init__(connection, filters, id_column="id", fits=fits)
        self._driver = driver
        self._rows = rows
        self._where = _where("postgresql", filters, _Inlined(literals))
        self._anonymized = anonymized

    @classmethod
    async def on(
        cls,
        connection: AsyncConnection,
        filters: Filters,
        rows: PgRows,
        *,
        fits: bool = False,
        anonymized: Anonymized | None = None,
    ) -> PostgresChunks:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        literals = {}
        if filters.email is not None:
            literals["email"] = await driver.fetchval(
                "SELECT quote_literal($1::text)", filters.email
            )
        if anonymized is not None:
            # Transaction-local: they end with the snapshot's rollback.
            arguments = anonymize_sql.pg_setup_arguments(anonymized.anonymization)
            await driver.execute(anonymize_sql.PG_SETUP, *arguments)
        return cls(connection, driver, filters, rows, literals, fits=fits, anonymized=anonymized)

    def select(self, after: int, end: int | None) -> str:
        """The chunk's SELECT with its values inlined: COPY takes no parameters."""
        where = f"{self._where} AND id > {int(after)}"
        if end is not None:
            where += f" AND id <= {int(end)}"
        source = f"users WHERE {where}"
        if self._anonymized is not None:
            columns, anonymization = self._anonymized.columns, self._anonymized.anonymization
            source = anonymize_sql.pg_source(columns, anonymization, where)
        # users.id: an output column may be named like a table column.
        return f"SELECT {self._rows.select} FROM {source} ORDER BY users.id"

    async def read(self, after: int, end: int | None) -> Chunk:
        parts: list[bytes] = []

        async def collect(data: bytes) -> None:
            parts.append(data)

        status = await self._driver.copy_from_query(
            self.select(after, end), output=collect, **self._rows.copy_options
        )
        body = b"".join(parts)
        if self._rows.finish is not None:
            body = self._rows.finish(body)
        return Chunk(body=body, rows=int(status.rsplit(" ", 1)[-1]))


class SqliteChunks(_Chunks):
    """Chunks by one aggregate query each, through SQLAlchemy and aiosqlite."""

    def __init__(
        self,
        connection: AsyncConnection,
        filters: Filters,
        rows: SqliteRows,
        *,
        one_chunk: bool = False,
        fits: bool = False,
        anonymized: Anonymized | None = None,
    ) -> None:
        """`one_chunk`: the export's count says all its rows fit in one chunk.

        An anonymized export's functions must be registered first (`sqlite_setup`).
        """
        id_column = _id_column("sqlite", filters, few_rows=one_chunk)
        super().__init__(connection, filters, id_column=id_column, fits=fits)
        where = _where("sqlite", filters, self._bound)

        def chunk_sql(range_condition: str, users: str = "users") -> TextClause:
            selected = f"{where} AND {range_condition}"
            if anonymized is None:
                source = f"{users} WHERE {selected} ORDER BY {id_column}"
            else:
                columns, anonymization = anonymized.columns, anonymized.anonymization
                source = anonymize_sql.sqlite_source(
                    columns, anonymization, users, selected, id_column
                )
            return self._bound.statement(
                "SELECT CAST(group_concat(line, '') AS BLOB), count(*) "
                f"FROM (SELECT {rows.line} AS line FROM {source})"
            )

        self._range = chunk_sql(f"{id_column} > :after AND {id_column} <= :end")
        # A sync's last (open-ended) chunk reads the change index: without
        # statistics SQLite would walk the ids to the end of the table.
        users = "users" if filters.since is None else "users INDEXED BY ix_users_change_seq"
        self._rest = chunk_sql(f"{id_column} > :after", users)
        self._finish = rows.finish

    async def read(self, after: int, end: int | None) -> Chunk:
        if end is None:
            statement, values = self._rest, self._values(after=after)
        else:
            statement, values = self._range, self._values(after=after, end=end)
        body, rows = (await self._connection.execute(statement, values)).one()
        records = bytes(body or b"")
        if self._finish is not None:
            records = self._finish(records)
        return Chunk(body=records, rows=rows)


async def sqlite_setup(connection: AsyncConnection, anonymized: Anonymized) -> None:
    """Register the anonymized export's functions on this connection (replacing older ones)."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    for name, arguments, function in anonymize_sql.sqlite_functions(anonymized.anonymization):
        await driver.create_function(name, arguments, function, deterministic=True)
