"""Anonymized exports (`anonymize=true|day`): pseudonyms computed by the database.

Every format's anonymized document is compared byte for byte with the format's
reference encoder fed the reference pseudonyms (`exports/anonymize.py`), and
read back against the users table: no real email or name survives.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update

from reviewpoint.config import Settings
from reviewpoint.db import create_engine, shared_snapshot, standalone_session
from reviewpoint.exports import anonymize_sql, cursor
from reviewpoint.exports.anonymize import (
    Anonymization,
    PseudonymKey,
    pseudonym_email,
    pseudonym_kinds,
    pseudonym_name,
    start_of_day,
)
from reviewpoint.exports.columns import FULL, MINIMAL, ExportSpec
from reviewpoint.exports.formats import FORMATS
from reviewpoint.exports.formats.base import Options
from reviewpoint.exports.query import Anonymized, Filters, PostgresChunks
from reviewpoint.main import create_app
from reviewpoint.users.models import User
from tests.conftest import BACKENDS, statements_sent
from tests.data import create_api_key, insert_user, insert_users, live_users
from tests.exports.hostile import HOSTILE_NAMES, MARKUP_NAMES
from tests.features.overrides import override

EXPORT = "/api/v1/users/export"
EXPORT_FULL = "/api/v1/users/export-full"
PATHS = {"minimal": EXPORT, "full": EXPORT_FULL}
SPECS = {"minimal": MINIMAL, "full": FULL}
KEY = "anonymize-key-for-tests-0123456789abcdef"
OTHER_KEY = "another-anonymize-key-for-tests-0123456789"
CREATED = datetime(2025, 1, 8, 10, 30, 0, 987654, tzinfo=UTC)
LOGIN = datetime(2025, 3, 4, 23, 59, 59, 999999, tzinfo=UTC)
# Chunks of 7: every export spans several queries (and connections on PostgreSQL).
CHUNK_ROWS = 7


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "anonymize_key": SecretStr(KEY),
            "export_chunk_rows": CHUNK_ROWS,
            "export_rate_limit": "10000/minute",
        }
    )


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    secret = create_api_key(db_url, ["users:export_full"])[1]
    return {"X-API-Key": secret, "Accept-Encoding": "identity"}


@pytest.fixture
def users(db_url: str) -> None:
    names = HOSTILE_NAMES + MARKUP_NAMES
    insert_users(db_url, [(f"h{n}@example.com", name) for n, name in enumerate(names)])
    insert_users(
        db_url,
        [
            ("=Formula@Example.COM", "x"),
            ("a&b<c>@example.com", None),
            ("-m@example.com", ""),
            ("ÄRGER@example.com", "Ärger"),
            ("ärger@example.com", "ärger"),
        ],
        created_at=CREATED,
    )
    insert_user(db_url, "deleted@example.com", name="Deleted", is_deleted=True)
    _set_last_login(db_url)


def _set_last_login(db_url: str) -> None:
    async def run() -> None:
        async with standalone_session(db_url) as session:
            first = await session.scalar(select(User.id).order_by(User.id).limit(1))
            await session.execute(update(User).where(User.id == first).values(last_login_at=LOGIN))

    asyncio.run(run())


def _anonymization(day: bool = False, key: str = KEY) -> Anonymization:
    return Anonymization(key=PseudonymKey(key), day=day)


def _reference(
    db_url: str, format_name: str, spec: ExportSpec, anonymization: Anonymization
) -> bytes:
    """The document the format's Python encoder writes from the reference pseudonyms."""
    names = {"id", "email", *spec.header}
    rows = [
        anonymization.row(spec.columns, {name: getattr(user, name) for name in names})
        for user in live_users(db_url)
    ]
    return FORMATS[format_name].encode(spec.columns, rows, Options())


def _parts(document: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(document)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _records(format_name: str, document: bytes) -> list[dict[str, object]]:
    """What a consumer reads back, with a standard parser; every value as text or None."""
    if format_name == "csv":
        header, *rows = csv.reader(io.StringIO(document.decode(), newline=""))
        return [dict(zip(header, row, strict=True)) for row in rows]
    if format_name == "ndjson":
        return [json.loads(line) for line in document.decode().splitlines()]
    if format_name == "json":
        records: list[dict[str, object]] = json.loads(document)
        return records
    sheet = openpyxl.load_workbook(io.BytesIO(document)).worksheets[0]
    header, *rows = sheet.iter_rows(values_only=True)
    return [dict(zip(header, row, strict=True)) for row in rows]


def _get(client: TestClient, key: dict[str, str], path: str, **params: str) -> bytes:
    response = client.get(path, params=params, headers=key)
    assert response.status_code == 200, response.text
    return response.content


def _emails(client: TestClient, key: dict[str, str], **params: str) -> dict[int, str]:
    body = _get(client, key, EXPORT, format="ndjson", **params)
    return {record["id"]: record["email"] for record in _records("ndjson", body)}


# --- the reference -------------------------------------------------------------


def test_the_keyed_hash_is_hmac_sha256() -> None:
    for secret in (KEY, "k" * 200):  # a key longer than a block is hashed first (RFC 2104)
        key = PseudonymKey(secret)
        expected = hmac.digest(secret.encode(), b"a@example.com", "sha256")
        assert key.digest(b"a@example.com") == expected


def test_reference_pseudonyms_look_like_an_address_and_a_name() -> None:
    key = PseudonymKey(KEY)
    digest = hmac.digest(KEY.encode(), b"ann@example.com", "sha256")
    assert pseudonym_email(key, "Ann@Example.COM") == f"u-{digest[:10].hex()}@example.invalid"
    # The name's pseudonym is the next 6 bytes of the same HMAC: one per user.
    assert pseudonym_name(key, "Ann@Example.COM", "Ann") == f"User {digest[10:16].hex()}"
    assert pseudonym_name(key, "ann@example.com", None) is None
    assert pseudonym_name(key, "ann@example.com", "") == ""
    # Only ASCII letters fold, as in the unique index: these are two addresses.
    assert pseudonym_email(key, "ÄRGER@x.org") != pseudonym_email(key, "ärger@x.org")


def test_the_key_is_not_in_its_repr() -> None:
    assert KEY not in repr(PseudonymKey(KEY))
    assert KEY not in repr(_anonymization())


# --- every format, both exports, both modes -----------------------------------------


@pytest.mark.parametrize("mode", ["true", "day"])
@pytest.mark.parametrize("spec_name", ["minimal", "full"])
@pytest.mark.parametrize("format_name", list(FORMATS))
@pytest.mark.usefixtures("users")
def test_every_format_holds_the_reference_pseudonyms_and_no_real_email_or_name(
    client: TestClient,
    db_url: str,
    full_key: dict[str, str],
    format_name: str,
    spec_name: str,
    mode: str,
) -> None:
    spec = SPECS[spec_name]
    streamed = _get(client, full_key, PATHS[spec_name], format=format_name, anonymize=mode)
    reference = _reference(db_url, format_name, spec, _anonymization(day=mode == "day"))
    if format_name == "xlsx":
        assert _parts(streamed) == _parts(reference)  # the zips differ only in timestamps
    else:
        assert streamed == reference

    stored = {user.id: user for user in live_users(db_url)}
    records = _records(format_name, streamed)
    assert [int(str(record["id"])) for record in records] == list(stored)
    key = PseudonymKey(KEY)
    for record in records:
        user = stored[int(str(record["id"]))]
        assert record["email"] == pseudonym_email(key, user.email) != user.email
        if user.name:
            assert record["name"] == pseudonym_name(key, user.email, user.name) != user.name
        else:
            assert record["name"] in (None, "")
    # Not even inside another value: no stored address anywhere in the document.
    text = b"".join(_parts(streamed).values()) if format_name == "xlsx" else streamed
    for user in stored.values():
        assert user.email.encode() not in text


@pytest.mark.usefixtures("users")
def test_day_truncates_every_timestamp_to_midnight_utc(
    client: TestClient, full_key: dict[str, str]
) -> None:
    fields = "id,created_at,updated_at,last_login_at"
    body = _get(client, full_key, EXPORT_FULL, fields=fields, anonymize="day", format="ndjson")
    records = _records("ndjson", body)
    assert records[0]["last_login_at"] == "2025-03-04T00:00:00Z"
    assert all(record["last_login_at"] is None for record in records[1:])
    assert {record["created_at"][10:] for record in records} == {"T00:00:00Z"}  # type: ignore[index]
    assert {record["updated_at"][10:] for record in records} == {"T00:00:00Z"}  # type: ignore[index]
    assert "2025-01-08T00:00:00Z" in {record["created_at"] for record in records}
    # `true` keeps them to the second.
    kept = _get(client, full_key, EXPORT_FULL, fields=fields, anonymize="true", format="ndjson")
    assert _records("ndjson", kept)[0]["last_login_at"] == "2025-03-04T23:59:59Z"
    assert start_of_day(LOGIN) == datetime(2025, 3, 4, tzinfo=UTC)


@pytest.mark.usefixtures("users")
def test_ids_flags_and_other_fields_stay(client: TestClient, full_key: dict[str, str]) -> None:
    fields = "is_admin,id,is_active,is_deleted"
    plain = _get(client, full_key, EXPORT_FULL, fields=fields)
    assert _get(client, full_key, EXPORT_FULL, fields=fields, anonymize="true") == plain


# --- what the pseudonyms promise ------------------------------------------------------


@pytest.mark.usefixtures("users")
def test_pseudonyms_are_the_same_across_exports_and_filters(
    client: TestClient, full_key: dict[str, str]
) -> None:
    first = _emails(client, full_key, anonymize="true")
    assert _emails(client, full_key, anonymize="true") == first
    # A filtered or resumed export gives each user the pseudonym the full one gave.
    some = _emails(client, full_key, anonymize="true", after_id=str(min(first) + 3), limit="9")
    assert some == {user_id: first[user_id] for user_id in some}
    assert len(some) == 9
    # `email` filters on the real address (any ASCII case) and answers its pseudonym.
    [(user_id, email)] = _emails(
        client, full_key, anonymize="true", email="=formula@example.com"
    ).items()
    assert first[user_id] == email


@pytest.mark.usefixtures("users")
def test_pseudonyms_change_with_the_key(
    settings: Settings, client: TestClient, full_key: dict[str, str]
) -> None:
    first = _emails(client, full_key, anonymize="true")
    rekeyed = settings.model_copy(update={"anonymize_key": SecretStr(OTHER_KEY)})
    with TestClient(create_app(rekeyed)) as other:
        second = _emails(other, full_key, anonymize="true")
    assert first.keys() == second.keys()
    assert all(first[user_id] != second[user_id] for user_id in first)


@pytest.mark.usefixtures("users")
def test_a_new_key_gets_a_new_etag_never_a_304(
    settings: Settings, client: TestClient, full_key: dict[str, str]
) -> None:
    """Old pseudonyms must not be revalidated as current once the key has changed."""
    path = "/api/v1/users/export-full"
    anonymized = client.get(path, params={"anonymize": "true"}, headers=full_key)
    plain = client.get(path, headers=full_key)
    day = client.get(path, params={"anonymize": "day"}, headers=full_key)
    tags = {response.headers["ETag"] for response in (anonymized, plain, day)}
    assert len(tags) == 3
    assert KEY not in str(anonymized.headers)
    rekeyed = settings.model_copy(update={"anonymize_key": SecretStr(OTHER_KEY)})
    with TestClient(create_app(rekeyed)) as other:
        again = other.get(
            path,
            params={"anonymize": "true"},
            headers={**full_key, "If-None-Match": anonymized.headers["ETag"]},
        )
    assert again.status_code == 200
    assert again.headers["ETag"] != anonymized.headers["ETag"]


def test_distinct_addresses_get_distinct_pseudonyms_and_case_variants_one(
    db_url: str, client: TestClient, full_key: dict[str, str]
) -> None:
    addresses = [f"user{n}@example.com" for n in range(1500)]
    addresses += [f"User{n}@Example.org" for n in range(1500)]  # mixed case, other domain
    insert_users(db_url, [(address, None) for address in addresses])
    body = _get(client, full_key, EXPORT, anonymize="true")
    emails = [row[1] for row in csv.reader(io.StringIO(body.decode(), newline=""))][1:]
    assert len(emails) == len(set(emails)) == 3000
    key = PseudonymKey(KEY)
    # One pseudonym for every spelling of an address: the case the unique index ignores.
    assert pseudonym_email(key, "user7@example.org") in emails


# --- with the other parameters ------------------------------------------------------------


@pytest.mark.usefixtures("users")
def test_an_incremental_sync_gives_the_pseudonyms_of_the_full_export(
    db_url: str, client: TestClient, full_key: dict[str, str]
) -> None:
    response = client.get(
        EXPORT_FULL, params={"anonymize": "true", "format": "ndjson"}, headers=full_key
    )
    full = {record["id"]: record for record in _records("ndjson", response.content)}
    token = response.headers[cursor.HEADER]
    changed, removed = sorted(full)[2], sorted(full)[4]

    async def write() -> None:
        async with standalone_session(db_url) as session:
            await session.execute(update(User).where(User.id == changed).values(is_active=False))
            await session.execute(update(User).where(User.id == removed).values(is_deleted=True))

    asyncio.run(write())
    body = _get(client, full_key, EXPORT_FULL, anonymize="true", format="ndjson", cursor=token)
    synced = {record["id"]: record for record in _records("ndjson", body)}
    assert set(synced) == {changed, removed}
    for user_id, record in synced.items():
        assert (record["email"], record["name"]) == (full[user_id]["email"], full[user_id]["name"])
    assert synced[removed]["is_deleted"] is True


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL])
def test_an_unknown_mode_is_a_422_naming_the_parameter(
    client: TestClient, full_key: dict[str, str], path: str
) -> None:
    response = client.get(path, params={"anonymize": "maybe"}, headers=full_key)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "anonymize"]
    assert "true, false or day" in error["msg"]


@pytest.mark.usefixtures("users")
def test_booleans_are_spelled_as_for_the_other_parameters(
    client: TestClient, full_key: dict[str, str]
) -> None:
    assert _get(client, full_key, EXPORT, anonymize="1") == _get(
        client, full_key, EXPORT, anonymize="true"
    )
    assert _get(client, full_key, EXPORT, anonymize="False") == _get(client, full_key, EXPORT)
    assert _get(client, full_key, EXPORT, anonymize="DAY") == _get(
        client, full_key, EXPORT, anonymize="day"
    )


def test_switched_off_anonymized_exports_are_a_403_and_plain_ones_still_work(
    settings: Settings, full_key: dict[str, str]
) -> None:
    off = settings.model_copy(update={"feature_users_export_anonymized": False})
    with TestClient(create_app(off)) as client:
        response = client.get(EXPORT_FULL, params={"anonymize": "true"}, headers=full_key)
        assert response.status_code == 403
        assert response.json() == {"detail": "Feature 'users:export_anonymized' is disabled"}
        assert client.get(EXPORT_FULL, headers=full_key).status_code == 200


def test_switched_on_at_runtime_without_a_key_is_a_503_saying_so(
    settings: Settings, db_url: str, full_key: dict[str, str]
) -> None:
    # A production server whose environment switched the feature off needs no key...
    prod = settings.model_copy(
        update={"env": "prod", "anonymize_key": None, "feature_users_export_anonymized": False}
    )
    override(db_url, "users:export_anonymized", True)  # ...until an admin switches it on.
    with TestClient(create_app(prod)) as client:
        response = client.get(EXPORT, params={"anonymize": "true"}, headers=full_key)
    assert response.status_code == 503
    assert "REVIEWPOINT_ANONYMIZE_KEY" in response.json()["detail"]


# --- the key never travels in SQL text ------------------------------------------------


def _key_material(secret: str) -> list[str]:
    key = PseudonymKey(secret)
    return [secret, key.inner_block.hex(), key.outer_block.hex()]


@pytest.mark.usefixtures("users")
def test_no_statement_or_parameter_holds_the_key(
    client: TestClient, full_key: dict[str, str]
) -> None:
    with statements_sent(client.app) as sent:
        _get(client, full_key, EXPORT_FULL, anonymize="true")
    assert sent
    for statement, parameters in sent:
        for material in _key_material(KEY):
            assert material not in statement
            assert material not in repr(parameters)


# COPY is PostgreSQL's; SQLite's statements are all checked by the test above.
@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b == "postgresql"], indirect=True)
def test_postgres_chunks_carry_no_key_in_their_copy_text(db_url: str) -> None:
    async def run() -> tuple[str, list[str]]:
        engine = create_engine(db_url)
        try:
            async with shared_snapshot(engine, 1) as [connection]:
                rows = FORMATS["csv"].pg_rows(pseudonym_kinds(FULL.columns), Options())
                anonymized = Anonymized(columns=FULL.columns, anonymization=_anonymization())
                reader = await PostgresChunks.on(connection, Filters(), rows, anonymized=anonymized)
                # The settings the COPY reads are there, set by bind parameters.
                inner = await connection.exec_driver_sql(
                    "SELECT current_setting('reviewpoint.anonymize_inner')"
                )
                assert inner.scalar_one() == PseudonymKey(KEY).inner_block.hex()
                select = reader.select(0, 100)
                plan = await connection.exec_driver_sql(f"EXPLAIN (VERBOSE) {select}")
                return select, list(plan.scalars())
        finally:
            await engine.dispose()

    text, plan = asyncio.run(run())
    for material in _key_material(KEY):
        assert material not in text
    # One HMAC of two SHA-256, once per row: the format's SQL, which names
    # `email` and `name`, reads them from the fenced derived table, in id order.
    assert "\n".join(plan).count("sha256(") == 2
    assert plan[0].startswith("Subquery Scan on users")
    assert not any("Sort" in line for line in plan)


def test_sqlite_computes_one_pseudonym_per_row(
    db_url: str, client: TestClient, full_key: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_users(db_url, [(f"=u{n}@example.com", f"-n{n}") for n in range(20)])
    calls: list[str] = []
    registered = anonymize_sql.sqlite_functions

    def counted_functions(anonymization: Anonymization) -> list[tuple[str, int, Any]]:
        def counted(function: Callable[..., str]) -> Callable[..., str]:
            def call(*arguments: Any) -> str:
                calls.append(function.__name__)
                return function(*arguments)

            return call

        return [(name, n, counted(function)) for name, n, function in registered(anonymization)]

    monkeypatch.setattr(anonymize_sql, "sqlite_functions", counted_functions)
    # CSV's SQL names each text column most often (quoting, the formula guard),
    # and the email and the name both come from the one pseudonym.
    _get(client, full_key, EXPORT, anonymize="true")
    expected = 20 if db_url.startswith("sqlite") else 0  # PostgreSQL hashes in SQL
    assert len(calls) == expected
