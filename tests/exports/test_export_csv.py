"""What an export download holds, byte for byte, on each database."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reviewpoint.config import Settings
from reviewpoint.db import standalone_session
from reviewpoint.exports.columns import FULL, MINIMAL, ExportSpec
from reviewpoint.exports.formats.base import Options
from reviewpoint.exports.formats.csv import BOM, CsvEncoder
from reviewpoint.main import create_app
from reviewpoint.users.models import User
from tests.data import create_api_key, create_user, insert_users
from tests.exports.hostile import HOSTILE_NAMES


def _rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


def _reference(
    db_url: str, spec: ExportSpec, email: str | None = None, options: Options = Options()
) -> bytes:
    """The export as the plain-Python encoder writes it from ORM objects."""

    async def load() -> list[User]:
        async with standalone_session(db_url) as session:
            query = select(User).where(User.is_deleted.is_(False)).order_by(User.id)
            return list((await session.scalars(query)).all())

    users = asyncio.run(load())
    if email is not None:
        users = [user for user in users if user.email.lower() == email.lower()]
    encoder = CsvEncoder(spec, options)
    rows = [{name: getattr(user, name) for name, _ in spec.columns} for user in users]
    return encoder.header() + encoder.rows(rows)


def test_export_is_a_csv_attachment(client: TestClient, db_url: str, full_key: dict[str, str]):
    response = client.get("/api/v1/users/export", headers=full_key)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="users_export.csv"'


def test_export_full_is_a_csv_attachment(client: TestClient, full_key: dict[str, str]):
    response = client.get("/api/v1/users/export-full", headers=full_key)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="users_full_export.csv"'


def test_empty_export_is_just_the_header(client: TestClient, full_key: dict[str, str]):
    assert client.get("/api/v1/users/export", headers=full_key).content == b"id,email,name\r\n"
    assert (
        client.get("/api/v1/users/export-full", headers=full_key).content
        == b"id,email,name,created_at,updated_at,is_active,is_admin\r\n"
    )


def test_export_minimal_rows(client: TestClient, db_url: str, full_key: dict[str, str]):
    first = create_user(db_url, "john.doe@example.com", name="John Doe")
    second = create_user(db_url, "jane@example.com")
    body = client.get("/api/v1/users/export", headers=full_key).content
    lines = [
        "id,email,name",
        f"{first},john.doe@example.com,John Doe",
        f"{second},jane@example.com,",
    ]
    assert body == "".join(line + "\r\n" for line in lines).encode()


def test_export_full_formats_timestamps_and_booleans(
    client: TestClient, db_url: str, full_key: dict[str, str]
):
    moment = datetime(2025, 1, 8, 10, 30, 0, 987654, tzinfo=UTC)
    insert_users(db_url, [("john@example.com", "John Doe")], created_at=moment)
    create_user(db_url, "boss@example.com", name="Boss", is_admin=True, is_active=False)
    rows = _rows(client.get("/api/v1/users/export-full", headers=full_key).content)
    assert rows[0] == list(FULL.header)
    assert rows[1][1:] == [
        "john@example.com",
        "John Doe",
        "2025-01-08T10:30:00Z",
        "2025-01-08T10:30:00Z",
        "true",
        "false",
    ]
    assert rows[2][5:] == ["false", "true"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[2][3])


def test_export_holds_every_live_user_in_id_order(
    settings: Settings, db_url: str, full_key: dict[str, str]
):
    insert_users(db_url, [(f"user{n}@example.com", f"User {n}") for n in range(2_345)])
    # A small chunk size makes the export cross many chunk boundaries.
    app = create_app(settings.model_copy(update={"export_chunk_rows": 100}))
    with TestClient(app) as client:
        for path in ("/api/v1/users/export", "/api/v1/users/export-full"):
            rows = _rows(client.get(path, headers=full_key).content)[1:]
            assert [row[1] for row in rows] == [f"user{n}@example.com" for n in range(2_345)]
            ids = [int(row[0]) for row in rows]
            assert ids == sorted(set(ids))


def test_deleted_users_leave_every_export(
    client: TestClient, db_url: str, full_key: dict[str, str]
):
    from tests.data import admin_headers

    admin = admin_headers(client, db_url)
    gone = create_user(db_url, "gone@example.com", name="Gone")
    assert client.delete(f"/api/v1/users/{gone}", headers=admin).status_code == 204
    for path in ("/api/v1/users/export", "/api/v1/users/export-full"):
        emails = [row[1] for row in _rows(client.get(path, headers=full_key).content)[1:]]
        assert emails == ["admin@example.com"]


def test_hostile_names_round_trip(client: TestClient, db_url: str, full_key: dict[str, str]):
    insert_users(db_url, [(f"h{n}@example.com", name) for n, name in enumerate(HOSTILE_NAMES)])
    rows = _rows(client.get("/api/v1/users/export", headers=full_key).content)[1:]
    expected = [
        "'" + name if name and name[0] in "=+-@\t\r" else (name or "") for name in HOSTILE_NAMES
    ]
    assert [row[2] for row in rows] == expected


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("spec", [MINIMAL, FULL], ids=["minimal", "full"])
def test_streamed_bytes_equal_the_reference_encoder(
    settings: Settings, db_url: str, full_key: dict[str, str], spec: ExportSpec, connections: int
):
    names = HOSTILE_NAMES * 3
    insert_users(db_url, [(f"h{n}@example.com", name) for n, name in enumerate(names)])
    insert_users(db_url, [("=formula@example.com", "x"), ("-minus@example.com", "y")])
    # Tiny chunks read by several connections at once (PostgreSQL; SQLite uses
    # one): chunk ends and hand-over order are exercised many times.
    changes = {"export_chunk_rows": 7, "export_connections": connections}
    app = create_app(settings.model_copy(update=changes))
    path = "/api/v1/users/export" if spec is MINIMAL else "/api/v1/users/export-full"
    with TestClient(app) as client:
        assert client.get(path, headers=full_key).content == _reference(db_url, spec)


def test_formula_guard_covers_emails(client: TestClient, db_url: str, full_key: dict[str, str]):
    insert_users(db_url, [("=cmd@example.com", "ok"), ("+x@example.com", "ok")])
    rows = _rows(client.get("/api/v1/users/export", headers=full_key).content)[1:]
    assert [row[1] for row in rows] == ["'=cmd@example.com", "'+x@example.com"]


def test_email_filter_is_case_insensitive_exact_match(
    client: TestClient, db_url: str, full_key: dict[str, str]
):
    insert_users(
        db_url,
        [("John@Example.com", "John"), ("johnny@example.com", "Johnny"), ("x@example.com", "X")],
    )
    response = client.get(
        "/api/v1/users/export", params={"email": "john@EXAMPLE.com"}, headers=full_key
    )
    assert [row[1:] for row in _rows(response.content)[1:]] == [["John@Example.com", "John"]]
    assert response.content == _reference(db_url, MINIMAL, email="john@example.com")


@pytest.mark.parametrize("email", ["o'hara@example.com", "back\\slash@example.com"])
def test_email_filter_with_sql_quote_characters_matches_only_that_address(
    client: TestClient, db_url: str, full_key: dict[str, str], email: str
):
    # PostgreSQL's COPY takes no parameters: the address is inlined as a literal
    # the server itself quoted, so quotes and backslashes must neither break the
    # query nor widen the match.
    insert_users(db_url, [(email, "Target"), ("x@example.com", "X")])
    response = client.get("/api/v1/users/export", params={"email": email}, headers=full_key)
    assert response.status_code == 200
    assert [row[1:] for row in _rows(response.content)[1:]] == [[email, "Target"]]


def test_email_filter_without_match_is_just_the_header(
    client: TestClient, db_url: str, full_key: dict[str, str]
):
    insert_users(db_url, [("x@example.com", "X")])
    response = client.get(
        "/api/v1/users/export", params={"email": "nobody@example.com"}, headers=full_key
    )
    assert response.status_code == 200
    assert response.content == b"id,email,name\r\n"


@pytest.mark.parametrize("value", ["csv", "CSV", "Csv"])
def test_format_csv_is_case_insensitive(client: TestClient, full_key: dict[str, str], value: str):
    response = client.get("/api/v1/users/export", params={"format": value}, headers=full_key)
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/users/export", "/api/v1/users/export-full"])
@pytest.mark.parametrize("value", ["xml", "xls", "", "csv ", "json5"])
def test_unknown_formats_are_400_listing_the_supported_ones(
    client: TestClient, full_key: dict[str, str], path: str, value: str
):
    response = client.get(path, params={"format": value}, headers=full_key)
    assert response.status_code == 400
    assert response.json() == {
        "detail": f"Unsupported format {value!r}. Supported: 'csv', 'ndjson', 'json', 'xlsx'."
    }


# --- spreadsheet options ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/users/export", "/api/v1/users/export-full"])
def test_bom_true_prepends_a_utf8_byte_order_mark_and_changes_nothing_else(
    client: TestClient, db_url: str, full_key: dict[str, str], path: str
):
    insert_users(db_url, [(f"h{n}@example.com", name) for n, name in enumerate(HOSTILE_NAMES)])
    plain = client.get(path, headers=full_key).content
    marked = client.get(path, params={"bom": "true"}, headers=full_key).content
    assert BOM == b"\xef\xbb\xbf"
    assert marked == BOM + plain
    assert client.get(path, params={"bom": "false"}, headers=full_key).content == plain


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("spec", [MINIMAL, FULL], ids=["minimal", "full"])
def test_excel_safe_false_leaves_text_unguarded_as_the_reference_does(
    settings: Settings, db_url: str, full_key: dict[str, str], spec: ExportSpec, connections: int
):
    insert_users(db_url, [(f"h{n}@example.com", name) for n, name in enumerate(HOSTILE_NAMES)])
    # Unguarded, a name can be exactly CR: it must not pass for PostgreSQL's record end.
    insert_users(db_url, [("cr@example.com", "\r"), ("crlf@example.com", "\r\n")])
    insert_users(db_url, [("=formula@example.com", "x"), ("-minus@example.com", "y")])
    changes = {"export_chunk_rows": 7, "export_connections": connections}
    path = "/api/v1/users/export" if spec is MINIMAL else "/api/v1/users/export-full"
    with TestClient(create_app(settings.model_copy(update=changes))) as client:
        body = client.get(path, params={"excel_safe": "false"}, headers=full_key).content
    assert body == _reference(db_url, spec, options=Options(excel_safe=False))
    rows = _rows(body)[1:]
    assert [row[2] for row in rows][: len(HOSTILE_NAMES)] == [name or "" for name in HOSTILE_NAMES]
    assert [row[1] for row in rows][-2:] == ["=formula@example.com", "-minus@example.com"]


def test_excel_safe_true_is_the_default(client: TestClient, db_url: str, full_key: dict[str, str]):
    insert_users(db_url, [("=x@example.com", "=1+1")])
    guarded = client.get("/api/v1/users/export", headers=full_key).content
    explicit = client.get("/api/v1/users/export", params={"excel_safe": "true"}, headers=full_key)
    assert explicit.content == guarded
    assert _rows(guarded)[1][1:] == ["'=x@example.com", "'=1+1"]


@pytest.mark.parametrize("format_name", ["ndjson", "json", "xlsx"])
@pytest.mark.parametrize(
    ("option", "value"), [("bom", "true"), ("excel_safe", "false")], ids=["bom", "excel_safe"]
)
def test_csv_options_on_another_format_are_400(
    client: TestClient, full_key: dict[str, str], format_name: str, option: str, value: str
):
    params = {"format": format_name, option: value}
    response = client.get("/api/v1/users/export-full", params=params, headers=full_key)
    assert response.status_code == 400
    assert response.json() == {
        "detail": f"'{option}={value}' applies to format 'csv' only, not to '{format_name}'."
    }


@pytest.mark.parametrize("format_name", ["ndjson", "json", "xlsx"])
def test_csv_options_at_their_defaults_are_accepted_on_any_format(
    client: TestClient, full_key: dict[str, str], format_name: str
):
    params = {"format": format_name, "bom": "false", "excel_safe": "true"}
    assert client.get("/api/v1/users/export", params=params, headers=full_key).status_code == 200
