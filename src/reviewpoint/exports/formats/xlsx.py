"""XLSX (Office Open XML workbook), written while it streams, in constant memory.

XlsxWriter and openpyxl hold the whole file before its first byte. Here the
database writes each chunk's `<row>` elements (the sheet XML's bulk, like the
CSV), and the workbook around them is a handful of fixed parts, zipped as they
stream (`zipping.py`, with stream-zip).

- Typed cells: ids are numbers; email and name inline strings (`t="inlineStr"`,
  no shared-strings table, which would need every string before the first
  row); timestamps real Excel dates (the serial number of days since
  1899-12-30, UTC, to the second) shown as `yyyy-mm-dd hh:mm:ss`; booleans
  `t="b"`. A missing value or empty text is an empty cell.
- The header row is bold and frozen; columns have widths for their kind.
- Excel's limit is 1,048,576 rows a sheet: longer exports continue on sheets
  "Users 2", "Users 3", ..., each with its own header row. The number of sheets
  comes from the export's row count, known before the first byte.
- XML 1.0 cannot hold U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+FFFE
  and U+FFFF, even escaped: they are removed from text. CR and LF are written
  as `&#13;` and `&#10;` so they survive XML's line-end normalisation.
- No formula guard: a string cell is never evaluated.

`XlsxFormat.encode` builds the same workbook from Python values, all at once;
tests compare the two part by part and read both back with openpyxl.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from stream_zip import ZIP_32, MemberFile

from reviewpoint.db import utcnow
from reviewpoint.exports.columns import Column, ColumnKind, utc_second
from reviewpoint.exports.formats.base import BodyWriter, Options, PgRows, Row, SqliteRows, sql_text
from reviewpoint.exports.formats.zipping import FILE_MODE, ZipPump, zip_members

# Rows per sheet, header included (Excel's maximum).
SHEET_ROWS = 1_048_576
SHEET_NAME = "Users"

FORBIDDEN = "".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])) + "\ufffe\uffff"
_DELETE_FORBIDDEN = str.maketrans("", "", FORBIDDEN)
# (character, escape), in the order applied: `&` first.
_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;"), ("\n", "&#10;"))

EXCEL_EPOCH = datetime(1899, 12, 30, tzinfo=UTC)
_EPOCH_TO_EXCEL_SECONDS = 25_569 * 86_400  # 1899-12-30 to 1970-01-01
# The day's fraction to ten decimals (under 9 microseconds): exact integer arithmetic
# in all three implementations, so they agree to the digit.
_FRACTION_DIGITS = 10

_WIDTHS: dict[ColumnKind, int] = {
    "id": 10,
    "text": 32,
    "pseudonym": 32,
    "timestamp": 20,
    "optional_timestamp": 20,
    "boolean": 10,
}
_EMPTY_CELL = "<c/>"
_TEXT_OPEN = '<c t="inlineStr"><is><t xml:space="preserve">'
_TEXT_CLOSE = "</t></is></c>"
_DATE_OPEN = '<c s="1"><v>'
_VALUE_CLOSE = "</v></c>"
_TRUE = '<c t="b"><v>1</v></c>'
_FALSE = '<c t="b"><v>0</v></c>'

# --- Python (the reference) -------------------------------------------------


def xml_text(text: str) -> str:
    text = text.translate(_DELETE_FORBIDDEN)
    for character, escape in _ESCAPES:
        text = text.replace(character, escape)
    return text


def excel_serial(value: datetime) -> str:
    seconds = int((utc_second(value) - EXCEL_EPOCH).total_seconds())
    days, second_of_day = divmod(seconds, 86_400)
    fraction = (second_of_day * 10**_FRACTION_DIGITS + 43_200) // 86_400
    return f"{days}.{fraction:0{_FRACTION_DIGITS}d}"


def _cell(kind: ColumnKind, value: object) -> str:
    if value is None or value == "":
        return _EMPTY_CELL
    if kind in ("text", "pseudonym"):
        return f"{_TEXT_OPEN}{xml_text(str(value))}{_TEXT_CLOSE}"
    if kind in ("timestamp", "optional_timestamp"):
        assert isinstance(value, datetime)
        return f"{_DATE_OPEN}{excel_serial(value)}{_VALUE_CLOSE}"
    if kind == "boolean":
        return _TRUE if value else _FALSE
    assert isinstance(value, int)
    return f"<c><v>{value}</v></c>"


def row_xml(columns: tuple[Column, ...], row: Row) -> bytes:
    cells = "".join(_cell(kind, row[name]) for name, kind in columns)
    return f"<row>{cells}</row>\n".encode()


# --- PostgreSQL ---------------------------------------------------------------


def _pg_text(name: str) -> str:
    # Most text needs no escaping: one regular-expression test spares five
    # replaces (translate() alone, on every value, tripled the export's time).
    needs_work = sql_text("[&<>\r\n" + FORBIDDEN[1:] + "]")  # no NUL in PostgreSQL text
    escaped = f"translate({name}, {sql_text(FORBIDDEN[1:])}, '')"
    for character, escape in _ESCAPES:
        escaped = f"replace({escaped}, {sql_text(character)}, {sql_text(escape)})"
    value = f"CASE WHEN {name} ~ {needs_work} THEN {escaped} ELSE {name} END"
    return (
        f"CASE WHEN {name} IS NULL OR {name} = '' THEN {sql_text(_EMPTY_CELL)} "
        f"ELSE {sql_text(_TEXT_OPEN)} || {value} || {sql_text(_TEXT_CLOSE)} END"
    )


def _pg_serial(name: str) -> str:
    # date_part (double) and not extract (numeric): a third of the time; the
    # floor is exact, microseconds are far above a double's resolution here.
    seconds = f"(floor(date_part('epoch', {name}))::bigint + {_EPOCH_TO_EXCEL_SECONDS})"
    fraction = f"({seconds} % 86400 * {10**_FRACTION_DIGITS} + 43200) / 86400"
    return f"({seconds} / 86400) || '.' || to_char({fraction}, 'FM{'0' * _FRACTION_DIGITS}')"


def _pg_cell(name: str, kind: ColumnKind) -> str:
    if kind == "text":
        return _pg_text(name)
    if kind == "pseudonym":
        return (
            f"CASE WHEN {name} IS NULL OR {name} = '' THEN {sql_text(_EMPTY_CELL)} "
            f"ELSE {sql_text(_TEXT_OPEN)} || {name} || {sql_text(_TEXT_CLOSE)} END"
        )
    if kind in ("timestamp", "optional_timestamp"):
        cell = f"{sql_text(_DATE_OPEN)} || {_pg_serial(name)} || {sql_text(_VALUE_CLOSE)}"
        return f"coalesce({cell}, {sql_text(_EMPTY_CELL)})" if kind != "timestamp" else cell
    if kind == "boolean":
        return f"CASE {name} WHEN true THEN {sql_text(_TRUE)} ELSE {sql_text(_FALSE)} END"
    return f"'<c><v>' || {name} || {sql_text(_VALUE_CLOSE)}"


# --- SQLite ---------------------------------------------------------------------

# SQLite has no translate() and no fast way to find the rare text that needs
# escaping (a GLOB per value quadrupled the export's time; 36 nested replace()
# overflow its parser). So its SQL writes the records' markup with `<`, `>` and
# the row's LF as bytes UTF-8 never holds, puts text in raw, and
# `_sqlite_records` escapes a whole chunk at once with bytes methods, then
# restores the markup.
_MARKUP = "<>\n"
_MARKERS = b"\xf5\xf6\xf7"
_MARK = bytes.maketrans(_MARKUP.encode(), _MARKERS)
_UNMARK = bytes.maketrans(_MARKERS, _MARKUP.encode())
# In UTF-8 the C0 controls are single bytes; U+FFFE and U+FFFF are not, and
# both start with a byte (0xEF) rare in most text: one memchr spares two slower
# searches for three bytes in nearly every chunk.
_FORBIDDEN_BYTES = "".join(c for c in FORBIDDEN if c < " ").encode()
_NONCHARACTERS = tuple(c.encode() for c in FORBIDDEN if c >= " ")
_NONCHARACTER_LEAD = b"\xef"
_BYTE_ESCAPES = tuple((character.encode(), escape.encode()) for character, escape in _ESCAPES)
# Julian day number of Excel's epoch, 1899-12-30 00:00.
_EXCEL_EPOCH_JULIAN_DAY = 2_415_018.5


def _sqlite_records(records: bytes) -> bytes:
    """A chunk from SQLite as the reference writes it: text cleaned and escaped, markup back."""
    # Escaping and removing commute (neither makes what the other acts on), so
    # removal shares the last pass with restoring the markup.
    for character, escape in _BYTE_ESCAPES:
        records = records.replace(character, escape)
    if _NONCHARACTER_LEAD in records:
        for noncharacter in _NONCHARACTERS:
            records = records.replace(noncharacter, b"")
    return records.translate(_UNMARK, _FORBIDDEN_BYTES)


def _sqlite_seconds(name: str) -> str:
    """Whole seconds from Excel's epoch to a stored timestamp, truncated as `excel_serial` does.

    Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC). SQLite's date functions round
    the fraction to the millisecond, so from '.9995' on they would give the
    next second (or day): values holding '.999' (rare) are cut to the second
    first; a substr() of every value would cost twice the instr() that finds
    them. julianday()'s double is within 0.03 ms of the millisecond it parsed,
    so half a millisecond added before truncating gives the second exactly
    (tests/exports/test_xlsx_sqlite_dates.py); unixepoch() would be 10% faster
    but needs SQLite 3.38 (Ubuntu 22.04 has 3.37).
    """

    def seconds(value: str) -> str:
        return f"CAST((julianday({value}) - {_EXCEL_EPOCH_JULIAN_DAY}) * 86400 + 0.0005 AS INTEGER)"

    return (
        f"(CASE WHEN instr({name}, '.999') THEN {seconds(f'substr({name}, 1, 19)')} "
        f"ELSE {seconds(name)} END)"
    )


@dataclass(frozen=True)
class _SqliteCell:
    """A column's cell as a piece of the row's printf format and its arguments."""

    xml: str
    arguments: tuple[str, ...]
    # For a column that may be empty: SQL true when it holds a value, and the
    # empty cell, consuming the same arguments (`%.0s` prints nothing).
    present: str | None = None
    empty_xml: str = ""


def _sqlite_cell(name: str, kind: ColumnKind) -> _SqliteCell:
    if kind in ("text", "pseudonym"):
        # `<>` is NULL for NULL: the empty cell, like ''.
        xml = f"{_TEXT_OPEN}%s{_TEXT_CLOSE}"
        return _SqliteCell(xml, (name,), f"{name} <> ''", f"{_EMPTY_CELL}%.0s")
    if kind in ("timestamp", "optional_timestamp"):
        seconds = _sqlite_seconds(name)
        days = f"{seconds} / 86400"
        fraction = f"({seconds} % 86400 * {10**_FRACTION_DIGITS} + 43200) / 86400"
        xml = f"{_DATE_OPEN}%d.%0{_FRACTION_DIGITS}d{_VALUE_CLOSE}"
        if kind == "timestamp":
            return _SqliteCell(xml, (days, fraction))
        return _SqliteCell(xml, (days, fraction), f"{name} IS NOT NULL", f"{_EMPTY_CELL}%.0s%.0s")
    if kind == "boolean":
        # 1 is true, anything else (NULL too) false, as before.
        return _SqliteCell('<c t="b"><v>%d</v></c>', (f"{name} = 1",))
    return _SqliteCell("<c><v>%d</v></c>", (name,))


def _sqlite_format(xml: str) -> str:
    """A row's printf format as a SQL literal, its markup marked (see `_sqlite_records`)."""
    return f"CAST(X'{xml.encode().translate(_MARK).hex()}' AS TEXT)"


def _sqlite_row(cells: tuple[_SqliteCell, ...]) -> str:
    """One printf per row, its format chosen by which cells are empty.

    With the dates above, this halves SQLite's time against a concatenation
    per piece of markup (1,000,000 rows: 1.7 s of CPU instead of 3.0, as fast
    as the CSV's row). `%s` ends text at a NUL, which neither the API nor
    PostgreSQL lets into a user (the CSV's SQLite path has the same limit).
    """

    def formats(done: tuple[str, ...], rest: tuple[_SqliteCell, ...]) -> str:
        if not rest:
            return _sqlite_format(f"<row>{''.join(done)}</row>\n")
        cell, *others = rest
        if cell.present is None:
            return formats((*done, cell.xml), tuple(others))
        full = formats((*done, cell.xml), tuple(others))
        empty = formats((*done, cell.empty_xml), tuple(others))
        return f"CASE WHEN {cell.present} THEN {full} ELSE {empty} END"

    arguments = ", ".join(argument for cell in cells for argument in cell.arguments)
    return f"printf({formats((), cells)}, {arguments})"


# --- the workbook -----------------------------------------------------------------

_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELATIONSHIPS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE_RELATIONSHIPS = "http://schemas.openxmlformats.org/package/2006/relationships"
_SPREADSHEET_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_STYLES = (
    f'<styleSheet xmlns="{_MAIN}">'
    '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)
_SHEET_END = b"</sheetData></worksheet>"
_ROW_END = b"</row>\n"


def _sheet_name(index: int) -> str:
    return SHEET_NAME if index == 1 else f"{SHEET_NAME} {index}"


def _package_parts(sheets: int) -> list[tuple[str, bytes]]:
    """Every part but the worksheets, in the order Excel itself writes them."""
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{index}.xml" '
        f'ContentType="{_SPREADSHEET_TYPE}.worksheet+xml"/>'
        for index in range(1, sheets + 1)
    )
    content_types = (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{_SPREADSHEET_TYPE}.sheet.main+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{_SPREADSHEET_TYPE}.styles+xml"/>'
        f"{overrides}</Types>"
    )
    root_relationships = (
        f'<Relationships xmlns="{_PACKAGE_RELATIONSHIPS}">'
        f'<Relationship Id="rId1" Type="{_RELATIONSHIPS}/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>'
    )
    sheet_list = "".join(
        f'<sheet name="{_sheet_name(index)}" sheetId="{index}" r:id="rId{index}"/>'
        for index in range(1, sheets + 1)
    )
    workbook = (
        f'<workbook xmlns="{_MAIN}" xmlns:r="{_RELATIONSHIPS}">'
        f"<bookViews><workbookView/></bookViews><sheets>{sheet_list}</sheets></workbook>"
    )
    sheet_relationships = "".join(
        f'<Relationship Id="rId{index}" Type="{_RELATIONSHIPS}/worksheet" '
        f'Target="worksheets/sheet{index}.xml"/>'
        for index in range(1, sheets + 1)
    )
    workbook_relationships = (
        f'<Relationships xmlns="{_PACKAGE_RELATIONSHIPS}">{sheet_relationships}'
        f'<Relationship Id="rId{sheets + 1}" Type="{_RELATIONSHIPS}/styles" '
        'Target="styles.xml"/></Relationships>'
    )
    parts = {
        "[Content_Types].xml": content_types,
        "_rels/.rels": root_relationships,
        "xl/workbook.xml": workbook,
        "xl/_rels/workbook.xml.rels": workbook_relationships,
        "xl/styles.xml": _STYLES,
    }
    return [(name, (_XML_DECLARATION + xml).encode()) for name, xml in parts.items()]


def _sheet_start(columns: tuple[Column, ...]) -> bytes:
    widths = "".join(
        f'<col min="{index}" max="{index}" width="{_WIDTHS[kind]}" customWidth="1"/>'
        for index, (_, kind) in enumerate(columns, start=1)
    )
    header = "".join(f'<c t="inlineStr" s="2"><is><t>{name}</t></is></c>' for name, _ in columns)
    return (
        f'{_XML_DECLARATION}<worksheet xmlns="{_MAIN}"><sheetViews>'
        '<sheetView workbookViewId="0"><pane ySplit="1" topLeftCell="A2" '
        'activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView></sheetViews>'
        f'<sheetFormatPr defaultRowHeight="15"/><cols>{widths}</cols>'
        f"<sheetData><row>{header}</row>\n"
    ).encode()


def _sheet_path(index: int) -> str:
    return f"xl/worksheets/sheet{index}.xml"


def sheet_count(rows: int, sheet_rows: int) -> int:
    return max(1, math.ceil(rows / (sheet_rows - 1)))


def _row_end(records: bytes, rows: int) -> int:
    """Where the first `rows` of `records` (`<row>...</row>` LF each) end.

    `</row>` occurs only as an element's end tag: text escapes `<`.
    """
    end = 0
    for _ in range(rows):
        end = records.index(_ROW_END, end) + len(_ROW_END)
    return end


class XlsxWriter:
    """The workbook around the database's rows, zipped as they stream."""

    def __init__(
        self, columns: tuple[Column, ...], *, total_rows: int, sheet_rows: int = SHEET_ROWS
    ) -> None:
        self._columns = columns
        self._capacity = sheet_rows - 1  # data rows a sheet holds below its header
        self._sheets = sheet_count(total_rows, sheet_rows)
        self._sheet = 0  # the sheet being written
        self._in_sheet = 0  # its data rows so far
        self._zip: ZipPump | None = None

    async def start(self) -> bytes:
        self._zip = ZipPump(modified_at=utcnow())
        for name, data in _package_parts(self._sheets):
            self._zip.open_member(name)
            self._zip.feed(data)
            self._zip.close_member()
        return await self._next_sheet()

    async def add(self, records: bytes, rows: int) -> bytes:
        assert self._zip is not None
        zipped = []
        while rows > self._capacity - self._in_sheet:
            fits = self._capacity - self._in_sheet
            cut = _row_end(records, fits)
            zipped.append(await self._zip.write(records[:cut]))
            records, rows = records[cut:], rows - fits
            zipped.append(await self._next_sheet())
        self._in_sheet += rows
        zipped.append(await self._zip.write(records))
        return b"".join(zipped)

    async def finish(self) -> bytes:
        assert self._zip is not None
        zipped = []
        # Sheets the count promised but the rows did not fill (none in a
        # snapshot) are left with their header, never missing.
        while self._sheet < self._sheets:
            zipped.append(await self._next_sheet())
        self._zip.feed(_SHEET_END)
        self._zip.close_member()
        zipped.append(await self._zip.finish())
        return b"".join(zipped)

    async def aclose(self) -> None:
        if self._zip is not None:
            self._zip.abort()

    async def _next_sheet(self) -> bytes:
        assert self._zip is not None
        if self._sheet == self._sheets:
            raise RuntimeError(f"more rows than the {self._sheets} sheet(s) the count planned")
        if self._sheet:
            self._zip.feed(_SHEET_END)
            self._zip.close_member()
        self._sheet += 1
        self._in_sheet = 0
        self._zip.open_member(_sheet_path(self._sheet))
        return await self._zip.write(_sheet_start(self._columns))


@dataclass(frozen=True)
class XlsxFormat:
    sheet_rows: int = SHEET_ROWS

    name = "xlsx"
    media_type = f"{_SPREADSHEET_TYPE}.sheet"
    extension = "xlsx"
    options = frozenset[str]()

    def pg_rows(self, columns: tuple[Column, ...], options: Options) -> PgRows:
        cells = " || ".join(_pg_cell(name, kind) for name, kind in columns)
        # COPY ends each row with LF.
        return PgRows(select=f"'<row>' || {cells} || '</row>'")

    def sqlite_rows(self, columns: tuple[Column, ...], options: Options) -> SqliteRows:
        line = _sqlite_row(tuple(_sqlite_cell(name, kind) for name, kind in columns))
        return SqliteRows(line, finish=_sqlite_records)

    def writer(
        self, columns: tuple[Column, ...], options: Options, *, total_rows: int
    ) -> BodyWriter:
        return XlsxWriter(columns, total_rows=total_rows, sheet_rows=self.sheet_rows)

    def encode(self, columns: tuple[Column, ...], rows: Iterable[Row], options: Options) -> bytes:
        records = [row_xml(columns, row) for row in rows]
        capacity = self.sheet_rows - 1
        sheets = sheet_count(len(records), self.sheet_rows)
        modified_at = utcnow()

        def members() -> Iterator[MemberFile]:
            for name, data in _package_parts(sheets):
                yield name, modified_at, FILE_MODE, ZIP_32, (data,)
            for index in range(sheets):
                sheet = records[index * capacity : (index + 1) * capacity]
                body = (_sheet_start(columns), *sheet, _SHEET_END)
                yield _sheet_path(index + 1), modified_at, FILE_MODE, ZIP_32, body

        return b"".join(zip_members(members()))


XLSX = XlsxFormat()
