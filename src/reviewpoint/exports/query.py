"""Which rows an export holds, and their CSV lines built by the database itself.

Every export is the live (not deleted) users in id order. Rows are read in
keyset chunks (`id > last id ... LIMIT n`) inside one snapshot transaction, so
each chunk is an index range scan and the whole file is one consistent view.

Formatting in SQL is what makes exports run at the database's own dump speed:
per-row work in Python (objects, `csv.writer`, `strftime`) costs several times
more than the query. Each dialect's expression mirrors `encoders.CsvEncoder`
exactly; tests compare both byte for byte on hostile data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from reviewpoint.exports.encoders import ColumnKind, ExportSpec


@dataclass(frozen=True)
class Chunk:
    body: str
    last_id: int
    rows: int


# Each dialect: how to guard, quote and render one column. `{c}` is the column.
_PG = {
    "guard": (
        "CASE WHEN left({c}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') "
        "THEN '''' || {c} ELSE coalesce({c}, '') END"
    ),
    "quote": (
        "CASE WHEN {c} ~ '[\",\\r\\n]' THEN '\"' || replace({c}, '\"', '\"\"') || '\"' ELSE {c} END"
    ),
    "id": "{c}::text",
    "timestamp": (
        "coalesce(to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"
    ),
    "boolean": "CASE WHEN {c} THEN 'true' ELSE 'false' END",
    "crlf": "E'\\r\\n'",
    "live": "is_deleted = false",
}
_SQLITE = {
    "guard": (
        "CASE WHEN substr({c}, 1, 1) IN ('=', '+', '-', '@', char(9), char(13)) "
        "THEN '''' || {c} ELSE coalesce({c}, '') END"
    ),
    "quote": (
        "CASE WHEN instr({c}, ',') OR instr({c}, '\"') OR instr({c}, char(13)) "
        "OR instr({c}, char(10)) THEN '\"' || replace({c}, '\"', '\"\"') || '\"' ELSE {c} END"
    ),
    "id": "CAST({c} AS TEXT)",
    "timestamp": "coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', {c}), '')",
    "boolean": "CASE WHEN {c} THEN 'true' ELSE 'false' END",
    "crlf": "char(13, 10)",
    "live": "is_deleted = 0",
}


def _cell(sql: dict[str, str], kind: ColumnKind, column: str) -> str:
    if kind == "text":
        return sql["quote"].format(c=column)
    return sql[kind].format(c=column)


@cache
def chunk_statement(dialect: str, spec: ExportSpec, *, by_email: bool) -> TextClause:
    """One chunk of CSV lines after `:after_id`, at most `:limit` rows.

    The SQL text is built only from the fixed column specs above; values are
    bound parameters.
    """
    sql = _PG if dialect == "postgresql" else _SQLITE
    # Guard text columns once in an inner query, then quote and join outside.
    inner_columns = ", ".join(
        f"{sql['guard'].format(c=name)} AS {name}" if kind == "text" else name
        for name, kind in spec.columns
        if name != "id"
    )
    line = " || ',' || ".join(_cell(sql, kind, name) for name, kind in spec.columns)
    where = f"{sql['live']} AND id > :after_id"
    if by_email:
        where += " AND lower(email) = lower(:email)"
    rows = (
        f"SELECT id, {line} || {sql['crlf']} AS line "
        f"FROM (SELECT id, {inner_columns} FROM users WHERE {where} ORDER BY id LIMIT :limit) AS u "
        "ORDER BY id"
    )
    if dialect == "postgresql":
        # One row per chunk: the database joins the lines, Python touches one string.
        return text(
            "SELECT string_agg(line, '' ORDER BY id) AS body, max(id) AS last_id, "
            f"count(*) AS n FROM ({rows}) AS lines"
        )
    return text(rows)


async def fetch_chunk(
    connection: AsyncConnection,
    spec: ExportSpec,
    *,
    after_id: int,
    limit: int,
    email: str | None,
) -> Chunk | None:
    """The next chunk after `after_id`, or None when the export is complete."""
    dialect = connection.dialect.name
    statement = chunk_statement(dialect, spec, by_email=email is not None)
    params: dict[str, object] = {"after_id": after_id, "limit": limit}
    if email is not None:
        params["email"] = email
    result = await connection.execute(statement, params)
    if dialect == "postgresql":
        body, last_id, count = result.one()
        return Chunk(body=body, last_id=last_id, rows=count) if count else None
    lines = result.all()
    if not lines:
        return None
    return Chunk(body="".join(line for _, line in lines), last_id=lines[-1][0], rows=len(lines))
