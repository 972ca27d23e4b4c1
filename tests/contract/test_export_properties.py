"""Exports of any users the API accepts, on each database (issue #10, item 2).

Hypothesis generates batches of users (`strategies.py`); each example replaces
the users of one migrated database per test (a fresh database per example
would cost a migration or a template copy each) and downloads exports from
the real app:

- every format, minimal and full, read back with a standard parser (`csv`,
  `json`, openpyxl) is the stored users, the CSV's text through the formula
  guard the README documents and nothing else;
- every CSV is strict RFC 4180 (`rfc4180.py`), however hostile the text;
- every document the database builds is byte for byte the format's Python
  reference encoder on the same rows, with each format's options and with
  `fields=` in any order.

`tests/exports/` holds the hand-picked cases these generalise.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import openpyxl
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openpyxl.utils.escape import unescape
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint import security
from reviewpoint.config import Settings, load_settings
from reviewpoint.db import create_engine
from reviewpoint.exports.columns import CHOOSABLE, FULL, MINIMAL, Column, ExportSpec
from reviewpoint.exports.formats import FORMATS
from reviewpoint.exports.formats.base import Options
from reviewpoint.main import create_app
from reviewpoint.users.models import NAME_MAX_LENGTH, User
from tests.contract import rfc4180
from tests.contract.conftest import scaled
from tests.contract.strategies import PASSWORD, GeneratedUser, email_key, user_batches
from tests.data import admin_headers, create_api_key

PATHS = {"minimal": "/api/v1/users/export", "full": "/api/v1/users/export-full"}
SPECS = {"minimal": MINIMAL, "full": FULL}
FORMAT_NAMES = ["csv", "ndjson", "json", "xlsx"]
IDENTITY = {"Accept-Encoding": "identity"}
ADMIN_EMAIL = "props-admin@example.com"

# The README's rules, restated here so the tests do not borrow the code under test.
# Formula guard (Export contents): a text cell starting with one of these gets a `'`.
GUARD_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\x00")
# XLSX (Formats): characters XML 1.0 cannot carry, removed from text.
XML_FORBIDDEN = {*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF}


# `fields=`: any of the choosable columns, one or more, in any order.
FIELD_LISTS = st.permutations(list(CHOOSABLE)).flatmap(
    lambda names: st.integers(1, len(names)).map(lambda count: names[:count])
)


# One example is a database's worth of work: each test keeps its database and
# app (function-scoped fixtures, on purpose) and replaces the users per example.
def db_settings(ci_examples: int) -> settings:
    return settings(
        max_examples=scaled(ci_examples),
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


_HASH = security.hash_password("generated-password-1")


@pytest.fixture
def settings_(db_url: str) -> Settings:
    """Chunks of three rows (several per export, read ahead by two connections on
    PostgreSQL) and no admission limit in the way of hundreds of exports."""
    return load_settings(
        _env_file=None,
        env="test",
        db_url=db_url,
        log_level="warning",
        export_chunk_rows=3,
        export_connections=2,
        export_rate_limit="10000/minute",
    )


@pytest.fixture
def app_client(settings_: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings_)) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, db_url: str) -> dict[str, str]:
    return admin_headers(client, db_url, ADMIN_EMAIL)


@pytest.fixture
def export_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


# --- the database ----------------------------------------------------------------


def _replace_users(db_url: str, batch: Sequence[GeneratedUser]) -> list[User]:
    """The database's users become `batch`, as the API would store them; read back in id order.

    Inserted in bulk with one shared hash (Argon2 per user would dominate);
    `test_generated_users_are_accepted_by_the_api` creates them through the API.
    """
    values = []
    for user in batch:
        body = user.create()
        values.append(
            {
                "email": body.email,
                "name": body.name,
                "is_active": body.is_active,
                "is_admin": body.is_admin,
                "hashed_password": _HASH,
                "created_at": user.created_at,
                "updated_at": user.updated_at,
                "last_login_at": user.last_login_at,
            }
        )

    async def run() -> list[User]:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(delete(User))
                if values:
                    await connection.execute(insert(User), values)
            async with AsyncSession(engine) as session:
                return list((await session.scalars(select(User).order_by(User.id))).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _row(user: User) -> dict[str, object]:
    return {name: getattr(user, name) for name in CHOOSABLE}


# --- what a consumer reads back ------------------------------------------------------


def _second(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value.astimezone(UTC).replace(microsecond=0)


def _csv_cell(kind: str, value: object) -> str:
    if value is None:
        return ""
    if kind == "text":
        assert isinstance(value, str)
        return "'" + value if value.startswith(GUARD_TRIGGERS) else value
    if kind in ("timestamp", "optional_timestamp"):
        return _second(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "boolean":
        return "true" if value else "false"
    return str(value)


def _json_value(kind: str, value: object) -> object:
    if kind in ("timestamp", "optional_timestamp") and value is not None:
        return _second(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _xlsx_value(kind: str, value: object) -> object:
    if value is None or value == "":
        return None  # an empty cell
    if kind == "text":
        assert isinstance(value, str)
        return "".join(c for c in value if ord(c) not in XML_FORBIDDEN)
    if kind in ("timestamp", "optional_timestamp"):
        return _second(value).replace(tzinfo=None)  # Excel has no zones: UTC
    return value


def _expected(format_name: str, columns: Sequence[Column], user: User) -> object:
    if format_name == "csv":
        return [_csv_cell(kind, getattr(user, name)) for name, kind in columns]
    if format_name == "xlsx":
        return [_xlsx_value(kind, getattr(user, name)) for name, kind in columns]
    return {name: _json_value(kind, getattr(user, name)) for name, kind in columns}


def _read_back(format_name: str, document: bytes, spec: ExportSpec) -> list[object]:
    """The records a consumer gets from `document` with a standard parser."""
    if format_name == "csv":
        records = rfc4180.read_strict(document)
        lenient = list(csv.reader(io.StringIO(document.decode(), newline=""), strict=True))
        assert lenient == records
        assert records[0] == spec.header
        return list(records[1:])
    if format_name == "ndjson":
        assert document == b"" or document.endswith(b"\n")
        return [json.loads(line) for line in document.decode().split("\n")[:-1]]
    if format_name == "json":
        parsed: list[object] = json.loads(document)
        return parsed
    workbook = openpyxl.load_workbook(io.BytesIO(document))
    (sheet,) = workbook.worksheets
    header, *rows = sheet.iter_rows(values_only=True)
    assert list(header) == spec.header
    # Excel reads `_xHHHH_` in text as the character U+HHHH (ECMA-376 ST_Xstring);
    # openpyxl leaves it, so it is decoded here as Excel and LibreOffice do.
    return [[unescape(v) if isinstance(v, str) else v for v in row] for row in rows]


# --- the documents the database builds ------------------------------------------------


def _zip_parts(document: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(document)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def _same_document(format_name: str, streamed: bytes, reference: bytes) -> None:
    if format_name == "xlsx":
        assert _zip_parts(streamed) == _zip_parts(reference)  # zips differ in their dates
    else:
        assert streamed == reference


# --- properties ---------------------------------------------------------------------


@db_settings(30)
@given(batch=user_batches(max_size=10))
def test_every_format_reads_back_as_the_stored_users(
    app_client: TestClient, db_url: str, export_key: dict[str, str], batch: list[GeneratedUser]
) -> None:
    stored = _replace_users(db_url, batch)
    for spec_name, spec in SPECS.items():
        for format_name in FORMAT_NAMES:
            # The client accepts gzip, as browsers and curl --compressed do.
            response = app_client.get(
                PATHS[spec_name], params={"format": format_name}, headers=export_key
            )
            assert response.status_code == 200, response.text
            compressed = format_name != "xlsx"  # a zip already
            assert response.headers.get("content-encoding") == ("gzip" if compressed else None)
            assert response.headers["X-Export-Rows"] == str(len(stored))
            expected = [_expected(format_name, spec.columns, user) for user in stored]
            assert _read_back(format_name, response.content, spec) == expected


@db_settings(25)
@given(
    batch=user_batches(max_size=10),
    bom=st.booleans(),
    excel_safe=st.booleans(),
    fields=FIELD_LISTS,
    fields_format=st.sampled_from(FORMAT_NAMES),
)
def test_sql_built_documents_equal_the_reference_encoders(
    app_client: TestClient,
    db_url: str,
    export_key: dict[str, str],
    batch: list[GeneratedUser],
    bom: bool,
    excel_safe: bool,
    fields: list[str],
    fields_format: str,
) -> None:
    rows = [_row(user) for user in _replace_users(db_url, batch)]
    cases: list[tuple[str, dict[str, str], tuple[Column, ...], Options]] = [
        (PATHS[spec_name], {"format": format_name}, spec.columns, Options())
        for spec_name, spec in SPECS.items()
        for format_name in FORMAT_NAMES
    ]
    cases.append(
        (
            PATHS["full"],
            {"format": "csv", "bom": str(bom).lower(), "excel_safe": str(excel_safe).lower()},
            FULL.columns,
            Options(bom=bom, excel_safe=excel_safe),
        )
    )
    chosen = tuple((name, CHOOSABLE[name]) for name in fields)
    params = {"format": fields_format, "fields": ",".join(fields)}
    cases.append((PATHS["full"], params, chosen, Options()))
    for path, params, columns, options in cases:
        response = app_client.get(path, params=params, headers={**export_key, **IDENTITY})
        assert response.status_code == 200, response.text
        reference = FORMATS[params["format"]].encode(columns, rows, options)
        _same_document(params["format"], response.content, reference)


@db_settings(20)
@given(batch=user_batches(max_size=6).filter(bool), data=st.data())
def test_the_email_filter_folds_ascii_case_only(
    app_client: TestClient,
    db_url: str,
    export_key: dict[str, str],
    batch: list[GeneratedUser],
    data: st.DataObject,
) -> None:
    """`email=` matches as logins do (README, Emails): ASCII letters in any case, the
    rest exactly; quotes and every other character reach the SQL as plain text."""
    stored = _replace_users(db_url, batch)
    for user in stored:
        wanted = data.draw(
            st.sampled_from([user.email, user.email.swapcase(), user.email.upper()]), "wanted"
        )
        response = app_client.get(
            PATHS["minimal"], params={"format": "ndjson", "email": wanted}, headers=export_key
        )
        assert response.status_code == 200, response.text
        # Not splitlines(): NDJSON leaves U+2028 and U+0085 raw inside strings.
        found = [json.loads(line)["id"] for line in response.content.split(b"\n")[:-1]]
        assert found == [u.id for u in stored if email_key(u.email) == email_key(wanted)]


@settings(max_examples=scaled(200))
@given(
    batch=user_batches(max_size=15),
    excel_safe=st.booleans(),
    bom=st.booleans(),
    fields=FIELD_LISTS,
)
def test_the_reference_csv_is_strict_rfc_4180_for_any_data(
    batch: list[GeneratedUser], excel_safe: bool, bom: bool, fields: list[str]
) -> None:
    """Without a database, so it can afford many more examples; the SQL's bytes
    equal it (above)."""
    columns = tuple((name, CHOOSABLE[name]) for name in fields)
    rows = []
    for index, user in enumerate(batch, start=1):
        body = user.create()
        rows.append(
            {
                "id": index,
                "email": body.email,
                "name": body.name,
                "created_at": user.created_at,
                "updated_at": user.updated_at,
                "last_login_at": user.last_login_at,
                "is_active": body.is_active,
                "is_admin": body.is_admin,
                "is_deleted": False,
            }
        )
    document = FORMATS["csv"].encode(columns, rows, Options(bom=bom, excel_safe=excel_safe))
    if bom:
        assert document.startswith(b"\xef\xbb\xbf")
        document = document[3:]
    records = rfc4180.read_strict(document)
    assert records[0] == [name for name, _ in columns]
    expected = [
        [
            _csv_cell(kind, row[name]) if excel_safe or kind != "text" else row[name] or ""
            for name, kind in columns
        ]
        for row in rows
    ]
    assert records[1:] == expected
    if excel_safe:
        for record, row in zip(records[1:], rows, strict=True):
            for cell, (name, kind) in zip(record, columns, strict=True):
                if kind == "text":
                    stored = row[name] or ""
                    ambiguous = stored[:1] == "'" and stored[1:2] in GUARD_TRIGGERS
                    assert _undo_guard(cell) == stored or ambiguous


def _undo_guard(cell: str) -> str:
    """The README's rule for getting stored text back from a guarded cell."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in GUARD_TRIGGERS else cell


@db_settings(8)
@given(batch=user_batches(max_size=3))
def test_generated_users_are_accepted_by_the_api(
    client: TestClient, db_url: str, admin: dict[str, str], batch: list[GeneratedUser]
) -> None:
    """What the strategies claim: the API creates each user and stores what they expect."""
    assume(all(email_key(user.email.stored) != ADMIN_EMAIL for user in batch))
    _delete_users_but_admin(db_url)
    for user in batch:
        response = client.post(
            "/api/v1/users",
            json={
                "email": user.email.given,
                "password": PASSWORD,
                "name": user.name,
                "is_active": user.is_active,
                "is_admin": user.is_admin,
            },
            headers=admin,
        )
        assert response.status_code == 201, response.text
        created = response.json()
        assert (created["email"], created["name"]) == (user.email.stored, user.name)
        assert (created["is_active"], created["is_admin"]) == (user.is_active, user.is_admin)
    stored = [(u.email, u.name) for u in _users_but_admin(db_url)]
    assert stored == [(user.email.stored, user.name) for user in batch]


@db_settings(30)
@given(
    name=st.one_of(
        st.tuples(st.text(), st.sampled_from(["\x00", "\ud800", "\udfff"]), st.text()).map("".join),
        st.text(min_size=NAME_MAX_LENGTH + 1, max_size=NAME_MAX_LENGTH * 2),
    )
)
def test_names_the_api_refuses_are_a_422_naming_the_field(
    client: TestClient, admin: dict[str, str], name: str
) -> None:
    """NUL, lone surrogates (JSON can spell them) and over-long names: a 422, never a 500."""
    body = {"email": "refused@example.com", "password": PASSWORD, "name": name}
    response = client.post(
        "/api/v1/users",
        content=json.dumps(body),  # ASCII, with \u escapes: lone surrogates travel too
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "name"]]


def _delete_users_but_admin(db_url: str) -> None:
    async def run() -> None:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(delete(User).where(User.email != ADMIN_EMAIL))
        finally:
            await engine.dispose()

    asyncio.run(run())


def _users_but_admin(db_url: str) -> list[User]:
    async def run() -> list[User]:
        engine = create_engine(db_url)
        try:
            async with AsyncSession(engine) as session:
                query = select(User).where(User.email != ADMIN_EMAIL).order_by(User.id)
                return list((await session.scalars(query)).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())
