"""Which rows an export holds, read chunk by chunk as CSV bytes the database builds.

Every export is the live (not deleted) users in id order; an incremental sync
(`cursor.py`) is instead every user changed after its cursor, deleted or not. A chunk is the rows
with `after < id <= end`, where `end` is the id `chunk_rows` live rows further
on (`chunk_end`, an index-only count on `ix_users_live_id`). Knowing each
chunk's end before reading it is what lets several connections read chunks at
once (`pipeline.py`).

Formatting happens in the database because per-row work in Python (objects,
`csv.writer`, `strftime`) costs several times the query. Each dialect's SQL
mirrors `encoders.CsvEncoder` exactly; tests compare both byte for byte on
hostile data.

- PostgreSQL: `COPY (SELECT ...) TO STDOUT (FORMAT csv)` quotes fields by the
  same rule as RFC 4180 and Python's `csv` (a field holding a comma, a quote,
  CR or LF is quoted, quotes doubled), in C and without escaping anything else.
  What SQL adds: the formula guard, `Z` timestamps, `true`/`false`, empty text
  as NULL (COPY would write `""`, Python writes nothing), and a last column
  holding a lone CR. COPY must quote that column, so every record ends in
  `,"<CR>"<LF>`, and that sequence cannot occur anywhere else: a quoted field
  never has a single `"` before a CR, and no text field is exactly a CR (the
  guard prefixes `'`). Replacing it with CRLF gives RFC 4180 line ends without
  touching line breaks inside names.
- SQLite: one `printf` per row, joined by `group_concat` over the id-ordered
  rows (SQLite does not flatten an ordered subquery into an aggregate, so the
  order holds) and returned as one BLOB: one step without the GIL, no per-row
  Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import asyncpg
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from reviewpoint.exports import cursor
from reviewpoint.exports.encoders import ExportSpec
from reviewpoint.users.models import email_key_sql

# Code points of the formula-guard triggers: = + - @ TAB CR, and NUL where text
# can hold it (SQLite). PostgreSQL's ascii('') is 0, so it must not be listed there.
_TRIGGERS = "61, 43, 45, 64, 9, 13"


@dataclass(frozen=True)
class Chunk:
    body: bytes
    rows: int


class ChunkReader(Protocol):
    """Reads one export's chunks on one connection inside the export's snapshot."""

    async def chunk_end(self, after: int) -> int | None:
        """The last id of the chunk after `after`, or None if it is the final chunk."""

    async def read(self, after: int, end: int | None) -> Chunk:
        """The CSV records of the live users with `after < id <= end` (no end: all)."""


def _filters(live: str, email_match: str, *, by_email: bool, end: bool, since: bool) -> str:
    # Incremental sync: the rows changed after the cursor replace the live ones.
    where = f"{cursor.CHANGED_SINCE if since else live} AND id > :after"
    if end:
        where += " AND id <= :end"
    if by_email:
        where += f" AND {email_match}"
    return where


class _Chunks:
    """What both dialects share: the rows' filter and where each chunk ends."""

    live: ClassVar[str]  # "not deleted" in the dialect's spelling
    email_match: ClassVar[str]  # the users' email rule (`email_key`), ditto

    def __init__(
        self,
        connection: AsyncConnection,
        spec: ExportSpec,
        *,
        email: str | None,
        chunk_rows: int,
        since: int | None = None,
    ) -> None:
        self._connection = connection
        self._spec = spec
        self._email = email
        self._chunk_rows = chunk_rows
        self._since = since
        where = _filters(
            self.live,
            self.email_match,
            by_email=email is not None,
            end=False,
            since=since is not None,
        )
        self._boundary = text(
            f"SELECT id FROM users WHERE {where} ORDER BY id LIMIT 1 OFFSET :skip"
        )
        self._one_chunk: bool | None = None

    def _values(self, **values: object) -> dict[str, object]:
        if self._email is not None:
            values["email"] = self._email
        if self._since is not None:
            values["since"] = self._since
        return values

    async def chunk_end(self, after: int) -> int | None:
        if await self._sync_fits_one_chunk():
            return None
        values = self._values(after=after, skip=self._chunk_rows - 1)
        end: int | None = (await self._connection.execute(self._boundary, values)).scalar()
        return end

    async def _sync_fits_one_chunk(self) -> bool:
        """Incremental sync: whether the rows changed after the cursor fit one chunk.

        A sync usually holds a few rows of a large table. Found by walking the
        id index, as chunk ends are, the last chunk's end costs a scan of the
        rest of the table (0.7 s on 1,000,000 SQLite rows for 3 changes); found
        on `ix_users_change_seq` it costs one index lookup per changed row.
        Counted once, on that index, stopping one past a chunk.
        """
        if self._since is None:
            return False
        if self._one_chunk is None:
            count = await self._connection.scalar(
                text(
                    f"SELECT count(*) FROM (SELECT 1 FROM users WHERE {cursor.CHANGED_SINCE} "
                    "LIMIT :over) AS changed"
                ),
                {"since": self._since, "over": self._chunk_rows + 1},
            )
            self._one_chunk = (count or 0) <= self._chunk_rows
        return self._one_chunk


# --- PostgreSQL ------------------------------------------------------------

_PG_RECORD_END = b',"\r"\n'


def _pg_column(name: str, kind: str) -> str:
    if kind == "text":
        return (
            f"CASE WHEN ascii({name}) IN ({_TRIGGERS}) THEN '''' || {name} "
            f"ELSE nullif({name}, '') END"
        )
    if kind == "timestamp":
        return f"to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    if kind == "boolean":
        return f"CASE {name} WHEN true THEN 'true' WHEN false THEN 'false' END"
    return name


class PostgresChunks(_Chunks):
    """Chunks by COPY on the asyncpg connection under a SQLAlchemy snapshot."""

    live = "is_deleted = false"
    email_match = (
        f"{email_key_sql('postgresql', 'email')} = {email_key_sql('postgresql', ':email')}"
    )

    def __init__(
        self,
        connection: AsyncConnection,
        driver: asyncpg.Connection,
        spec: ExportSpec,
        *,
        email: str | None,
        chunk_rows: int,
        since: int | None = None,
    ) -> None:
        super().__init__(connection, spec, email=email, chunk_rows=chunk_rows, since=since)
        self._driver = driver
        self._columns = ", ".join(_pg_column(name, kind) for name, kind in spec.columns)
        self._email_literal: str | None = None

    @classmethod
    async def on(
        cls,
        connection: AsyncConnection,
        spec: ExportSpec,
        *,
        email: str | None,
        chunk_rows: int,
        since: int | None = None,
    ) -> PostgresChunks:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        return cls(connection, driver, spec, email=email, chunk_rows=chunk_rows, since=since)

    async def _select(self, after: int, end: int | None) -> str:
        """The chunk's SELECT with its values inlined: COPY takes no parameters."""
        where = _filters(
            self.live,
            self.email_match,
            by_email=self._email is not None,
            end=end is not None,
            since=self._since is not None,
        )
        # Ids are ints, inlined as such; the email is quoted by the server itself.
        where = where.replace(":after", str(int(after)))
        if self._since is not None:
            where = where.replace(":since", str(int(self._since)))
        if end is not None:
            where = where.replace(":end", str(int(end)))
        if self._email is not None:
            if self._email_literal is None:
                self._email_literal = await self._driver.fetchval(
                    "SELECT quote_literal($1::text)", self._email
                )
            where = where.replace(":email", str(self._email_literal))
        return f"SELECT {self._columns}, E'\\r' FROM users WHERE {where} ORDER BY id"

    async def read(self, after: int, end: int | None) -> Chunk:
        parts: list[bytes] = []

        async def collect(data: bytes) -> None:
            parts.append(data)

        status = await self._driver.copy_from_query(
            await self._select(after, end), output=collect, format="csv"
        )
        body = b"".join(parts).replace(_PG_RECORD_END, b"\r\n")
        return Chunk(body=body, rows=int(status.rsplit(" ", 1)[-1]))


# --- SQLite ----------------------------------------------------------------


def _sqlite_field(name: str, kind: str) -> tuple[str, list[str]]:
    """One column's printf format and arguments."""
    if kind == "text":
        guarded = (
            f"CASE WHEN unicode({name}) IN ({_TRIGGERS}, 0) THEN '''' || {name} ELSE {name} END"
        )
        needs_quotes = (
            f"instr({name}, ',') OR instr({name}, '\"') "
            f"OR instr({name}, char(13)) OR instr({name}, char(10))"
        )
        cell = (
            f"CASE WHEN {needs_quotes} THEN '\"' || replace({guarded}, '\"', '\"\"') || '\"' "
            f"ELSE coalesce({guarded}, '') END"
        )
        return "%s", [cell]
    if kind == "timestamp":
        # Stored as SQLAlchemy writes them, 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC):
        # the first 10 and the 8 from the 12th are the date and the time.
        # NOT NULL columns: printf would render NULL as "TZ".
        return "%.10sT%.8sZ", [name, f"substr({name}, 12)"]
    if kind == "boolean":
        return "%s", [f"CASE {name} WHEN 1 THEN 'true' WHEN 0 THEN 'false' ELSE '' END"]
    return "%d", [name]


def _sqlite_chunk_sql(spec: ExportSpec, *, by_email: bool, end: bool, since: bool) -> TextClause:
    """One chunk's query; a sync's last (open-ended) chunk reads the change index:
    without statistics SQLite would walk the ids to the end of the table."""
    formats, args = [], []
    for name, kind in spec.columns:
        field_format, field_args = _sqlite_field(name, kind)
        formats.append(field_format)
        args.extend(field_args)
    line = f"printf('{','.join(formats)}' || char(13, 10), {', '.join(args)})"
    where = _filters(
        SqliteChunks.live, SqliteChunks.email_match, by_email=by_email, end=end, since=since
    )
    users = "users INDEXED BY ix_users_change_seq" if since and not end else "users"
    return text(
        "SELECT CAST(group_concat(line, '') AS BLOB), count(*) "
        f"FROM (SELECT {line} AS line FROM {users} WHERE {where} ORDER BY id)"
    )


class SqliteChunks(_Chunks):
    """Chunks by one aggregate query each, through SQLAlchemy and aiosqlite."""

    live = "is_deleted = 0"
    email_match = f"{email_key_sql('sqlite', 'email')} = {email_key_sql('sqlite', ':email')}"

    def __init__(
        self,
        connection: AsyncConnection,
        spec: ExportSpec,
        *,
        email: str | None,
        chunk_rows: int,
        since: int | None = None,
    ) -> None:
        super().__init__(connection, spec, email=email, chunk_rows=chunk_rows, since=since)
        by_email, by_change = email is not None, since is not None
        self._range = _sqlite_chunk_sql(spec, by_email=by_email, end=True, since=by_change)
        self._rest = _sqlite_chunk_sql(spec, by_email=by_email, end=False, since=by_change)

    async def read(self, after: int, end: int | None) -> Chunk:
        if end is None:
            statement, values = self._rest, self._values(after=after)
        else:
            statement, values = self._range, self._values(after=after, end=end)
        body, rows = (await self._connection.execute(statement, values)).one()
        return Chunk(body=bytes(body or b""), rows=rows)
