"""The CSV format of every export, defined once in plain Python.

The format, which clients rely on to the byte:

- RFC 4180: comma-separated, CRLF after every record (header included), a field
  quoted only when it holds a comma, a double quote, CR or LF, with inner quotes
  doubled. UTF-8, no byte-order mark.
- ids as decimal integers; timestamps as ISO 8601 UTC to the second ending in `Z`
  (`2025-01-08T10:30:00Z`); booleans as `true` / `false`; a missing name is an
  empty field.
- Formula guard (OWASP "CSV Injection", ASVS 5.0 1.2.10): a text cell (email,
  name) starting with `=`, `+`, `-`, `@`, tab, CR or NUL gets a leading `'`, so
  a spreadsheet shows it as text instead of running it. Ids, timestamps and
  booleans are never touched.

`CsvEncoder` here is the reference: the streaming path in `query.py` builds the
same bytes inside the database for speed, and the tests hold the two equal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

ColumnKind = Literal["id", "text", "timestamp", "boolean"]

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\x00")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class ExportSpec:
    """One export's columns and the file name it downloads as."""

    filename: str
    columns: tuple[tuple[str, ColumnKind], ...]

    @property
    def header(self) -> list[str]:
        return [name for name, _ in self.columns]


MINIMAL = ExportSpec(
    filename="users_export.csv",
    columns=(("id", "id"), ("email", "text"), ("name", "text")),
)
FULL = ExportSpec(
    filename="users_full_export.csv",
    columns=(
        ("id", "id"),
        ("email", "text"),
        ("name", "text"),
        ("created_at", "timestamp"),
        ("updated_at", "timestamp"),
        ("is_active", "boolean"),
        ("is_admin", "boolean"),
    ),
)


def guard_formula(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def format_cell(kind: ColumnKind, value: object) -> str:
    if value is None:
        return ""
    if kind == "text":
        return guard_formula(str(value))
    if kind == "timestamp":
        assert isinstance(value, datetime)
        moment = value.astimezone(UTC) if value.tzinfo else value
        return moment.strftime(TIMESTAMP_FORMAT)
    if kind == "boolean":
        return "true" if value else "false"
    return str(value)


class CsvEncoder:
    """Rows (mappings of column name to Python value) to the export's bytes."""

    def __init__(self, spec: ExportSpec) -> None:
        self.spec = spec

    def _encode(self, rows: Iterable[list[str]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(rows)
        return buffer.getvalue().encode("utf-8")

    def header(self) -> bytes:
        return self._encode([self.spec.header])

    def rows(self, rows: Iterable[Mapping[str, object]]) -> bytes:
        return self._encode(
            [format_cell(kind, row[name]) for name, kind in self.spec.columns] for row in rows
        )
