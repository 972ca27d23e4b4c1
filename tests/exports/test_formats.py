"""NDJSON, JSON and XLSX downloads: what they hold, byte for byte, on each database.

Each format's bytes are built by the database (the rows) and by the format's
writer (the framing); `<format>.encode` writes the same document from ORM
objects in plain Python. Streamed and reference documents must be equal, and
must parse back (json, openpyxl) to the users that were stored.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta, timezone

import openpyxl
import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from reviewpoint.exports.columns import FULL, MINIMAL, ExportSpec
from reviewpoint.exports.formats import FORMATS
from reviewpoint.exports.formats.base import ExportFormat, Options
from reviewpoint.exports.formats.xlsx import FORBIDDEN, XlsxFormat, excel_serial, xml_text
from reviewpoint.main import create_app
from tests.data import create_api_key, insert_users, live_users
from tests.exports.hostile import HOSTILE_NAMES, MARKUP_NAMES

EXPORT = "/api/v1/users/export"
EXPORT_FULL = "/api/v1/users/export-full"
PATHS = {"minimal": EXPORT, "full": EXPORT_FULL}
SPECS = {"minimal": MINIMAL, "full": FULL}
NEW_FORMATS = ["ndjson", "json", "xlsx"]
MEDIA_TYPES = {
    "ndjson": "application/x-ndjson",
    "json": "application/json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
ALL_NAMES = HOSTILE_NAMES + MARKUP_NAMES


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


def _reference(db_url: str, export_format: ExportFormat, spec: ExportSpec) -> bytes:
    """The document as the format's plain-Python encoder writes it from ORM objects."""
    rows = [{name: getattr(user, name) for name, _ in spec.columns} for user in live_users(db_url)]
    return export_format.encode(spec.columns, rows, Options())


def _insert_hostile(db_url: str, copies: int = 1) -> None:
    names = ALL_NAMES * copies
    insert_users(db_url, [(f"h{n}@example.com", name) for n, name in enumerate(names)])
    insert_users(
        db_url,
        [("=formula@example.com", "x"), ("a&b<c>@example.com", None), ("-m@example.com", "")],
        created_at=datetime(2025, 1, 8, 10, 30, 0, 987654, tzinfo=UTC),
    )
    # The last microsecond of a day (a leap day): truncated, never rounded into the next.
    insert_users(
        db_url,
        [("last-us@example.com", "late")],
        created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    )


def _parts(document: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(document)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def _same_document(name: str, streamed: bytes, reference: bytes) -> None:
    if name == "xlsx":
        # Equal parts; the zips differ only in their timestamps.
        assert _parts(streamed) == _parts(reference)
    else:
        assert streamed == reference


def _workbook_rows(document: bytes) -> list[list[tuple[object, ...]]]:
    workbook = openpyxl.load_workbook(io.BytesIO(document))
    return [list(sheet.iter_rows(values_only=True)) for sheet in workbook.worksheets]


def _expected_text(value: str | None, format_name: str) -> str | None:
    if format_name != "xlsx" or value is None:
        return value
    # Empty text is an empty cell; XML 1.0 cannot carry the forbidden characters.
    return value.translate(str.maketrans("", "", FORBIDDEN)) if value else None


def _expected_value(kind: str, value: object, format_name: str) -> object:
    if isinstance(value, datetime):
        moment = value.astimezone(UTC).replace(microsecond=0)
        if format_name == "xlsx":
            return moment.replace(tzinfo=None)  # Excel dates have no zone: UTC
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "text":
        assert value is None or isinstance(value, str)
        return _expected_text(value, format_name)
    return value


def _csv_records(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def _records(format_name: str, document: bytes, spec: ExportSpec) -> list[dict[str, object]]:
    """The records a consumer reads back from a document, with a standard parser."""
    header = spec.header
    if format_name == "ndjson":
        assert document == b"" or document.endswith(b"\n")
        return [json.loads(line) for line in document.decode("utf-8").split("\n")[:-1]]
    if format_name == "json":
        records: list[dict[str, object]] = json.loads(document)
        return records
    sheets = _workbook_rows(document)
    found = []
    for sheet in sheets:
        assert list(sheet[0]) == header
        found.extend(dict(zip(header, row, strict=True)) for row in sheet[1:])
    return found


# --- reference encoders ---------------------------------------------------------------


def test_ndjson_reference_writes_compact_typed_objects_one_per_line() -> None:
    moment = datetime(2025, 1, 8, 12, 30, 5, 999999, tzinfo=timezone(timedelta(hours=2)))
    row = {
        "id": 7,
        "email": "d@example.com",
        "name": 'Say "hi"\n\\ 🚀',
        "created_at": moment,
        "updated_at": datetime(2025, 1, 8, 15, 45, tzinfo=UTC),
        "is_active": True,
        "is_admin": False,
    }
    assert (
        FORMATS["ndjson"].encode(FULL.columns, [row, {**row, "name": None}], Options())
        == (
            '{"id":7,"email":"d@example.com","name":"Say \\"hi\\"\\n\\\\ 🚀",'
            '"created_at":"2025-01-08T10:30:05Z","updated_at":"2025-01-08T15:45:00Z",'
            '"is_active":true,"is_admin":false}\n'
            '{"id":7,"email":"d@example.com","name":null,'
            '"created_at":"2025-01-08T10:30:05Z","updated_at":"2025-01-08T15:45:00Z",'
            '"is_active":true,"is_admin":false}\n'
        ).encode()
    )


def test_json_reference_is_an_array_of_the_ndjson_objects() -> None:
    rows = [{"id": n, "email": f"u{n}@example.com", "name": "=x"} for n in (1, 2)]
    assert FORMATS["json"].encode(MINIMAL.columns, rows, Options()) == (
        b'[\n{"id":1,"email":"u1@example.com","name":"=x"},\n'
        b'{"id":2,"email":"u2@example.com","name":"=x"}\n]\n'
    )
    assert FORMATS["json"].encode(MINIMAL.columns, [], Options()) == b"[\n]\n"


@pytest.mark.parametrize(
    ("moment", "serial"),
    [
        (datetime(1899, 12, 30, tzinfo=UTC), "0.0000000000"),
        (datetime(2025, 1, 8, 10, 30, tzinfo=UTC), "45665.4375000000"),
        (
            datetime(2025, 1, 8, 12, 30, 0, 999999, tzinfo=timezone(timedelta(hours=2))),
            "45665.4375000000",
        ),
        (datetime(2025, 1, 8, 0, 0, 1, tzinfo=UTC), "45665.0000115741"),
        (datetime(2025, 1, 8, 23, 59, 59, tzinfo=UTC), "45665.9999884259"),
    ],
)
def test_excel_dates_are_utc_serial_days_to_the_second(moment: datetime, serial: str) -> None:
    assert excel_serial(moment) == serial


def test_xml_text_removes_what_xml_cannot_hold_and_escapes_markup() -> None:
    assert xml_text("a\x00\x01\x08\x0b\x0c\x0e\x1f\ufffe\uffffb") == "ab"
    assert xml_text("\t<&>\r\n") == "\t&lt;&amp;&gt;&#13;&#10;"
    assert xml_text("text 🚀 \u202e") == "text 🚀 \u202e"


# --- what a download is -------------------------------------------------------------


@pytest.mark.parametrize("spec_name", ["minimal", "full"])
@pytest.mark.parametrize("format_name", NEW_FORMATS)
def test_each_format_is_an_attachment_of_its_media_type(
    client: TestClient, full_key: dict[str, str], format_name: str, spec_name: str
) -> None:
    response = client.get(PATHS[spec_name], params={"format": format_name}, headers=full_key)
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES[format_name]
    stem = SPECS[spec_name].stem
    assert response.headers["content-disposition"] == (
        f'attachment; filename="{stem}.{format_name}"'
    )


@pytest.mark.parametrize("value", ["NDJSON", "Json", "XLSX", "xlsx"])
def test_format_names_are_case_insensitive(
    client: TestClient, full_key: dict[str, str], value: str
) -> None:
    response = client.get(EXPORT_FULL, params={"format": value}, headers=full_key)
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES[value.lower()]


@pytest.mark.parametrize("format_name", NEW_FORMATS)
def test_an_empty_export_is_an_empty_document(
    client: TestClient, full_key: dict[str, str], format_name: str
) -> None:
    body = client.get(EXPORT_FULL, params={"format": format_name}, headers=full_key).content
    assert _records(format_name, body, FULL) == []
    if format_name == "xlsx":
        assert [sheet[0] for sheet in _workbook_rows(body)] == [tuple(FULL.header)]
    else:
        assert body == {"ndjson": b"", "json": b"[\n]\n"}[format_name]


@pytest.mark.parametrize("spec_name", ["minimal", "full"])
@pytest.mark.parametrize("format_name", ["csv", *NEW_FORMATS])
def test_every_download_says_how_many_records_it_holds(
    settings: Settings, db_url: str, full_key: dict[str, str], format_name: str, spec_name: str
) -> None:
    app = create_app(settings.model_copy(update={"export_chunk_rows": 4}))
    with TestClient(app) as client:
        for users in (0, 9):
            if users:
                _insert_hostile(db_url)  # 9 hostile names with a newline, and more
            response = client.get(
                PATHS[spec_name], params={"format": format_name}, headers=full_key
            )
            spec = SPECS[spec_name]
            if format_name == "csv":
                count = len(_csv_records(response.content)) - 1
            else:
                count = len(_records(format_name, response.content, spec))
            assert response.headers["X-Export-Rows"] == str(count)
            assert count == len(live_users(db_url))


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("spec_name", ["minimal", "full"])
@pytest.mark.parametrize("format_name", NEW_FORMATS)
def test_streamed_documents_equal_the_reference_encoder(
    settings: Settings,
    db_url: str,
    full_key: dict[str, str],
    format_name: str,
    spec_name: str,
    connections: int,
) -> None:
    _insert_hostile(db_url, copies=2)
    # Tiny chunks read by several connections at once (PostgreSQL; SQLite uses
    # one): chunk ends and hand-over order are exercised many times.
    changes = {"export_chunk_rows": 7, "export_connections": connections}
    with TestClient(create_app(settings.model_copy(update=changes))) as client:
        response = client.get(PATHS[spec_name], params={"format": format_name}, headers=full_key)
    reference = _reference(db_url, FORMATS[format_name], SPECS[spec_name])
    _same_document(format_name, response.content, reference)


@pytest.mark.parametrize("format_name", NEW_FORMATS)
def test_hostile_data_parses_back_to_the_stored_users(
    client: TestClient, db_url: str, full_key: dict[str, str], format_name: str
) -> None:
    _insert_hostile(db_url)
    body = client.get(EXPORT_FULL, params={"format": format_name}, headers=full_key).content
    expected = [
        {
            name: _expected_value(kind, getattr(user, name), format_name)
            for name, kind in FULL.columns
        }
        for user in live_users(db_url)
    ]
    assert _records(format_name, body, FULL) == expected


@pytest.mark.parametrize("format_name", ["ndjson", "json"])
def test_json_formats_carry_native_types_and_no_formula_guard(
    client: TestClient, db_url: str, full_key: dict[str, str], format_name: str
) -> None:
    insert_users(
        db_url,
        [("=cmd@example.com", "=1+1"), ("n@example.com", None)],
        created_at=datetime(2025, 1, 8, 10, 30, 0, 987654, tzinfo=UTC),
    )
    body = client.get(EXPORT_FULL, params={"format": format_name}, headers=full_key).content
    first, second = _records(format_name, body, FULL)
    assert isinstance(first["id"], int)
    assert first["email"] == "=cmd@example.com"
    assert first["name"] == "=1+1"
    assert first["created_at"] == "2025-01-08T10:30:00Z"
    assert (first["is_active"], first["is_admin"]) == (True, False)
    assert second["name"] is None


def test_xlsx_cells_are_typed_and_the_header_bold_and_frozen(
    client: TestClient, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(
        db_url,
        [("a@example.com", "=1+1")],
        created_at=datetime(2025, 1, 8, 10, 30, 0, 987654, tzinfo=UTC),
    )
    body = client.get(EXPORT_FULL, params={"format": "xlsx"}, headers=full_key).content
    sheet = openpyxl.load_workbook(io.BytesIO(body)).active
    assert sheet is not None
    assert sheet.title == "Users"
    assert sheet.freeze_panes == "A2"
    assert all(cell.font.b for cell in sheet[1])
    assert sheet.column_dimensions["B"].width > sheet.column_dimensions["A"].width
    id_cell, email, name, created, updated, active, admin = sheet[2]
    assert id_cell.data_type == "n"
    assert isinstance(id_cell.value, int)
    assert (name.data_type, name.value) == ("s", "=1+1")  # a string, never a formula
    assert created.is_date
    assert updated.is_date
    assert created.number_format == "yyyy-mm-dd hh:mm:ss"
    assert created.value == datetime(2025, 1, 8, 10, 30, 0)
    assert (active.data_type, active.value, admin.value) == ("b", True, False)
    assert email.value == "a@example.com"


@pytest.mark.parametrize("users", [9, 10])
def test_xlsx_continues_on_further_sheets_past_the_row_limit(
    settings: Settings,
    db_url: str,
    full_key: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    users: int,
) -> None:
    # Four rows a sheet (a header and three users) stand for Excel's 1,048,576;
    # chunks of four rows straddle the sheet ends.
    monkeypatch.setitem(FORMATS, "xlsx", XlsxFormat(sheet_rows=4))
    insert_users(db_url, [(f"u{n}@example.com", f"User {n}") for n in range(users)])
    app = create_app(settings.model_copy(update={"export_chunk_rows": 4}))
    with TestClient(app) as client:
        body = client.get(EXPORT_FULL, params={"format": "xlsx"}, headers=full_key).content
    workbook = openpyxl.load_workbook(io.BytesIO(body))
    sheets = -(-users // 3)
    assert workbook.sheetnames == ["Users"] + [f"Users {n}" for n in range(2, sheets + 1)]
    emails = []
    for sheet in workbook.worksheets:
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[0] == tuple(FULL.header)
        assert 1 <= len(rows) - 1 <= 3
        emails.extend(row[1] for row in rows[1:])
    assert emails == [f"u{n}@example.com" for n in range(users)]
    _same_document("xlsx", body, _reference(db_url, XlsxFormat(sheet_rows=4), FULL))
