"""JSON (`application/json`): one array of the NDJSON format's objects, streamed.

The document is `[`, LF, the objects separated by `,` LF, LF, `]`, LF (`[\\n]\\n`
when empty). It is valid JSON only once complete: a download cut short (the
response is aborted, see `stream.py`) fails to parse instead of passing for a
shorter export.

The database writes NDJSON lines; a JSON object's text never holds a raw LF
(JSON escapes it), so turning each chunk's line ends into `,` LF is a plain
byte replacement, and the only state is whether a record was already sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from reviewpoint.exports.columns import Column
from reviewpoint.exports.formats.base import BodyWriter, Options, PgRows, Row, SqliteRows
from reviewpoint.exports.formats.ndjson import NDJSON, json_line

_OPEN = b"[\n"
_CLOSE = b"]\n"


class JsonArrayWriter:
    def __init__(self) -> None:
        self._sent_a_record = False

    async def start(self) -> bytes:
        return _OPEN

    async def add(self, records: bytes, rows: int) -> bytes:
        if not records:
            return b""
        # records: "{...}\n{...}\n" -> "{...},\n{...}", after ",\n" if one came before.
        body = records[:-1].replace(b"\n", b",\n")
        if self._sent_a_record:
            body = b",\n" + body
        self._sent_a_record = True
        return body

    async def finish(self) -> bytes:
        return (b"\n" if self._sent_a_record else b"") + _CLOSE

    async def aclose(self) -> None:
        return None


class JsonFormat:
    name = "json"
    media_type = "application/json"
    extension = "json"
    options: frozenset[str] = frozenset()

    def pg_rows(self, columns: tuple[Column, ...], options: Options) -> PgRows:
        return NDJSON.pg_rows(columns, options)

    def sqlite_rows(self, columns: tuple[Column, ...], options: Options) -> SqliteRows:
        return NDJSON.sqlite_rows(columns, options)

    def writer(
        self, columns: tuple[Column, ...], options: Options, *, total_rows: int
    ) -> BodyWriter:
        return JsonArrayWriter()

    def encode(self, columns: tuple[Column, ...], rows: Iterable[Row], options: Options) -> bytes:
        lines = [json_line(columns, row) for row in rows]
        body = ",\n".join(lines) + ("\n" if lines else "")
        return (_OPEN.decode() + body + _CLOSE.decode()).encode("utf-8")


JSON = JsonFormat()
