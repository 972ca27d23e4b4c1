"""What a format provides: a reference encoder, per-dialect SQL, and a body writer.

An export's bytes are built in three layers, each format filling in all three:

- **rows**: each dialect's database writes a chunk of records in the format
  (`PgRows`, `SqliteRows`), because per-row work in Python costs several times
  the query (see `query.py`);
- **body**: `BodyWriter` frames those chunks into a document (a CSV header, a
  JSON array's brackets, an XLSX workbook's zip);
- **reference**: `encode` writes the same document from Python values with
  the standard library. Tests hold the streamed bytes equal to it on hostile data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from reviewpoint.exports.columns import Column

Row = Mapping[str, object]

# PostgreSQL's COPY has no raw output mode. Its CSV mode writes a field
# untouched unless it holds the delimiter, the quote character, CR or LF; with
# delimiter and quote set to control characters no format lets through (JSON
# escapes them, XML 1.0 forbids them), a single text column comes out exactly
# as the SQL built it, one line per row. (Its text mode would double every
# backslash of a JSON escape.)
SINGLE_TEXT_COPY = {"format": "csv", "delimiter": "\x02", "quote": "\x01"}


@dataclass(frozen=True)
class Options:
    """Format options a caller may set; each format says which it honours."""

    bom: bool = False
    excel_safe: bool = True


@dataclass(frozen=True)
class PgRows:
    """A chunk's records from `COPY (SELECT <select> ...) TO STDOUT`."""

    select: str
    copy_options: Mapping[str, str] = field(default_factory=lambda: SINGLE_TEXT_COPY)
    # Turns COPY's output into the format's bytes (CSV's record ends).
    finish: Callable[[bytes], bytes] | None = None


@dataclass(frozen=True)
class SqliteRows:
    """One record's bytes as one SQL expression; a chunk concatenates them in id order."""

    line: str
    # Turns the concatenated records into the format's bytes.
    finish: Callable[[bytes], bytes] | None = None


class BodyWriter(Protocol):
    """Frames chunks of records into a document, as they stream."""

    async def start(self) -> bytes:
        """What comes before the first record."""

    async def add(self, records: bytes, rows: int) -> bytes:
        """The bytes to send for one chunk of `rows` records."""

    async def finish(self) -> bytes:
        """What comes after the last record."""

    async def aclose(self) -> None:
        """Release what the writer holds; called however the export ended."""


class ExportFormat(Protocol):
    name: str
    media_type: str
    extension: str
    # Options a caller may change from their defaults for this format.
    options: frozenset[str]

    def pg_rows(self, columns: tuple[Column, ...], options: Options) -> PgRows: ...

    def sqlite_rows(self, columns: tuple[Column, ...], options: Options) -> SqliteRows: ...

    def writer(
        self, columns: tuple[Column, ...], options: Options, *, total_rows: int
    ) -> BodyWriter: ...

    def encode(self, columns: tuple[Column, ...], rows: Iterable[Row], options: Options) -> bytes:
        """The whole document, from Python values: the reference the SQL must match."""
        ...


class PlainWriter:
    """A body that is a prefix and the chunks as the database wrote them."""

    def __init__(self, prefix: bytes = b"") -> None:
        self._prefix = prefix

    async def start(self) -> bytes:
        return self._prefix

    async def add(self, records: bytes, rows: int) -> bytes:
        return records

    async def finish(self) -> bytes:
        return b""

    async def aclose(self) -> None:
        return None


def sql_text(value: str) -> str:
    """A string literal for SQL built from our own constants (never from input)."""
    return "'" + value.replace("'", "''") + "'"
