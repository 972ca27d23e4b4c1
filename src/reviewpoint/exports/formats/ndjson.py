"""NDJSON (`application/x-ndjson`): one JSON object per record, each line ending in LF.

Keys are the column names in column order; values are native JSON: integers,
`true`/`false`, timestamps as the CSV's `Z` strings, `null` for a missing
value. Text is as stored: no formula guard (JSON is not opened by
spreadsheets), every character but `"`, `\\` and the C0 controls unescaped
(UTF-8). Objects are compact (`{"id":1,"email":"a@example.com"}`), exactly what
`json.dumps(..., ensure_ascii=False, separators=(",", ":"))` writes.

Each dialect's own JSON string quoting (`to_json`, `json_quote`) escapes the
same characters the same way as Python's `json` (`\\b \\f \\n \\r \\t`, other
controls as lowercase `\\u00XX`); tests hold them equal byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from reviewpoint.exports.columns import Column, ColumnKind, format_timestamp
from reviewpoint.exports.formats.base import (
    BodyWriter,
    Options,
    PgRows,
    PlainWriter,
    Row,
    SqliteRows,
)

_PG_TIMESTAMP = "to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"


def json_value(kind: ColumnKind, value: object) -> object:
    """A column's value as the JSON formats carry it."""
    if value is None:
        return None
    if kind in ("timestamp", "optional_timestamp"):
        assert isinstance(value, datetime)
        return format_timestamp(value)
    if kind == "boolean":
        return bool(value)
    if kind == "id":
        assert isinstance(value, int)
        return value
    return str(value)


def json_line(columns: tuple[Column, ...], row: Row) -> str:
    record = {name: json_value(kind, row[name]) for name, kind in columns}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _pg_value(name: str, kind: ColumnKind) -> str:
    if kind == "pseudonym":
        return f"coalesce('\"' || {name} || '\"', 'null')"
    if kind == "text":
        return f"coalesce(to_json({name})::text, 'null')"
    if kind == "timestamp":
        return f"'\"' || {_PG_TIMESTAMP.format(name=name)} || '\"'"
    if kind == "optional_timestamp":
        return f"coalesce('\"' || {_PG_TIMESTAMP.format(name=name)} || '\"', 'null')"
    # A boolean's text is `true` / `false`, an integer's its digits.
    return f"{name}::text"


def _sqlite_value(name: str, kind: ColumnKind) -> tuple[str, str]:
    """One value's printf format and argument."""
    if kind in ("text", "pseudonym"):
        return "%s", f"json_quote({name})"  # NULL is `null`
    if kind == "timestamp":
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC), see formats/csv.py.
        return '"%s"', f"printf('%.10sT%.8sZ', {name}, substr({name}, 12))"
    if kind == "optional_timestamp":
        return "%s", (
            f"CASE WHEN {name} IS NULL THEN 'null' "
            f"ELSE printf('\"%.10sT%.8sZ\"', {name}, substr({name}, 12)) END"
        )
    if kind == "boolean":
        return "%s", f"CASE {name} WHEN 1 THEN 'true' WHEN 0 THEN 'false' END"
    return "%d", name


def pg_object(columns: tuple[Column, ...]) -> str:
    """SQL for one record's JSON object text (PostgreSQL)."""
    parts = []
    for index, (name, kind) in enumerate(columns):
        key = ("{" if index == 0 else ",") + json.dumps(name) + ":"
        parts.append(f"'{key}' || {_pg_value(name, kind)}")
    return " || ".join(parts) + " || '}'"


def sqlite_object(columns: tuple[Column, ...]) -> tuple[str, list[str]]:
    """One record's JSON object as a printf format (without quotes) and its arguments."""
    formats, args = [], []
    for name, kind in columns:
        value_format, arg = _sqlite_value(name, kind)
        formats.append(json.dumps(name).replace("%", "%%") + ":" + value_format)
        args.append(arg)
    return "{" + ",".join(formats) + "}", args


class NdjsonFormat:
    name = "ndjson"
    media_type = "application/x-ndjson"
    extension = "ndjson"
    options: frozenset[str] = frozenset()

    def pg_rows(self, columns: tuple[Column, ...], options: Options) -> PgRows:
        return PgRows(select=pg_object(columns))

    def sqlite_rows(self, columns: tuple[Column, ...], options: Options) -> SqliteRows:
        line_format, args = sqlite_object(columns)
        return SqliteRows(f"printf('{line_format}' || char(10), {', '.join(args)})")

    def writer(
        self, columns: tuple[Column, ...], options: Options, *, total_rows: int
    ) -> BodyWriter:
        return PlainWriter()

    def encode(self, columns: tuple[Column, ...], rows: Iterable[Row], options: Options) -> bytes:
        return "".join(json_line(columns, row) + "\n" for row in rows).encode("utf-8")


NDJSON = NdjsonFormat()
