"""CSV (`text/csv`), the default format; its bytes are what clients have relied on.

- RFC 4180: comma-separated, CRLF after every record (header included), a field
  quoted only when it holds a comma, a double quote, CR or LF, with inner quotes
  doubled. UTF-8, no byte-order mark unless asked for (`bom=true`).
- ids as decimal integers; timestamps as ISO 8601 UTC to the second ending in `Z`
  (`2025-01-08T10:30:00Z`); booleans as `true` / `false`; a missing value is an
  empty field.
- Formula guard (OWASP "CSV Injection", ASVS 5.0 1.2.10), on unless
  `excel_safe=false`: a text cell (email, name) starting with `=`, `+`, `-`,
  `@`, tab, CR or NUL gets a leading `'`, so a spreadsheet shows it as text
  instead of running it. Ids, timestamps and booleans are never touched.

`CsvEncoder` is the reference; the SQL below builds the same bytes.

- PostgreSQL: `COPY (SELECT ...) TO STDOUT (FORMAT csv)` quotes fields by the
  same rule as RFC 4180 and Python's `csv` (a field holding a comma, a quote,
  CR or LF is quoted, quotes doubled), in C and without escaping anything else.
  What SQL adds: the formula guard, `Z` timestamps, `true`/`false`, empty text
  as NULL (COPY would write `""`, Python writes nothing), and a last column
  holding a lone CR. COPY must quote that column, so every record ends in
  `,"<CR>"<LF>`, and that sequence cannot occur anywhere else: a real field is
  always followed by a comma (the CR column is last), and inside a quoted
  field every quote is doubled. Replacing it with CRLF gives RFC 4180 line
  ends without touching line breaks inside names.
- SQLite: one `printf` per row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import datetime

from reviewpoint.exports.columns import Column, ColumnKind, ExportSpec, format_timestamp
from reviewpoint.exports.formats.base import (
    BodyWriter,
    Options,
    PgRows,
    PlainWriter,
    Row,
    SqliteRows,
)

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\x00")
BOM = b"\xef\xbb\xbf"
# Code points of the formula-guard triggers: = + - @ TAB CR, and NUL where text
# can hold it (SQLite). PostgreSQL's ascii('') is 0, so it must not be listed there.
_TRIGGERS = "61, 43, 45, 64, 9, 13"


def guard_formula(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def format_cell(kind: ColumnKind, value: object, *, excel_safe: bool = True) -> str:
    if value is None:
        return ""
    if kind == "text":
        return guard_formula(str(value)) if excel_safe else str(value)
    if kind in ("timestamp", "optional_timestamp"):
        assert isinstance(value, datetime)
        return format_timestamp(value)
    if kind == "boolean":
        return "true" if value else "false"
    return str(value)


class CsvEncoder:
    """Rows (mappings of column name to Python value) to the export's bytes."""

    def __init__(self, spec: ExportSpec, options: Options = Options()) -> None:
        self.spec = spec
        self.options = options

    def _encode(self, rows: Iterable[list[str]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(rows)
        return buffer.getvalue().encode("utf-8")

    def header(self) -> bytes:
        return (BOM if self.options.bom else b"") + self._encode([self.spec.header])

    def rows(self, rows: Iterable[Mapping[str, object]]) -> bytes:
        safe = self.options.excel_safe
        return self._encode(
            [format_cell(kind, row[name], excel_safe=safe) for name, kind in self.spec.columns]
            for row in rows
        )


# --- PostgreSQL ------------------------------------------------------------

_PG_RECORD_END = b',"\r"\n'


def _pg_column(name: str, kind: ColumnKind, *, excel_safe: bool) -> str:
    if kind == "pseudonym":
        return f"nullif({name}, '')"
    if kind == "text":
        if not excel_safe:
            return f"nullif({name}, '')"
        return (
            f"CASE WHEN ascii({name}) IN ({_TRIGGERS}) THEN '''' || {name} "
            f"ELSE nullif({name}, '') END"
        )
    if kind in ("timestamp", "optional_timestamp"):
        return f"to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    if kind == "boolean":
        return f"CASE {name} WHEN true THEN 'true' WHEN false THEN 'false' END"
    return name


def _pg_record_ends(body: bytes) -> bytes:
    return body.replace(_PG_RECORD_END, b"\r\n")


# --- SQLite ----------------------------------------------------------------


def _sqlite_field(name: str, kind: ColumnKind, *, excel_safe: bool) -> tuple[str, list[str]]:
    """One column's printf format and arguments."""
    if kind == "pseudonym":
        return "%s", [f"coalesce({name}, '')"]
    if kind == "text":
        guarded = (
            f"CASE WHEN unicode({name}) IN ({_TRIGGERS}, 0) THEN '''' || {name} ELSE {name} END"
            if excel_safe
            else name
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
    if kind == "optional_timestamp":
        return "%s", [
            f"CASE WHEN {name} IS NULL THEN '' "
            f"ELSE printf('%.10sT%.8sZ', {name}, substr({name}, 12)) END"
        ]
    if kind == "boolean":
        return "%s", [f"CASE {name} WHEN 1 THEN 'true' WHEN 0 THEN 'false' ELSE '' END"]
    return "%d", [name]


class CsvFormat:
    name = "csv"
    media_type = "text/csv"
    extension = "csv"
    options = frozenset({"bom", "excel_safe"})

    def pg_rows(self, columns: tuple[Column, ...], options: Options) -> PgRows:
        selected = ", ".join(
            _pg_column(name, kind, excel_safe=options.excel_safe) for name, kind in columns
        )
        return PgRows(
            select=f"{selected}, E'\\r'",
            copy_options={"format": "csv"},
            finish=_pg_record_ends,
        )

    def sqlite_rows(self, columns: tuple[Column, ...], options: Options) -> SqliteRows:
        formats, args = [], []
        for name, kind in columns:
            field_format, field_args = _sqlite_field(name, kind, excel_safe=options.excel_safe)
            formats.append(field_format)
            args.extend(field_args)
        return SqliteRows(f"printf('{','.join(formats)}' || char(13, 10), {', '.join(args)})")

    def writer(
        self, columns: tuple[Column, ...], options: Options, *, total_rows: int
    ) -> BodyWriter:
        return PlainWriter(prefix=self._encoder(columns, options).header())

    def encode(self, columns: tuple[Column, ...], rows: Iterable[Row], options: Options) -> bytes:
        encoder = self._encoder(columns, options)
        return encoder.header() + encoder.rows(rows)

    def _encoder(self, columns: tuple[Column, ...], options: Options) -> CsvEncoder:
        return CsvEncoder(ExportSpec(stem="", columns=columns), options)


CSV = CsvFormat()
