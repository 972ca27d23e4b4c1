"""Per-key data limits (`exports/limits.py`): a limited key never gets more.

Checked against the users table: a field outside the key's allow-list, a real
email or name through an anonymized-only key, by any parameter combination,
in every format, through `fields`, `email` and `cursor`: each answer is a 200
holding only what the key may see, or a 403 with a JSON detail, never data.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import zipfile
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from reviewpoint.config import Settings
from reviewpoint.exports import cursor
from reviewpoint.exports.columns import FULL
from reviewpoint.exports.formats import FORMATS
from reviewpoint.main import create_app
from tests.audit.records import settled_rows
from tests.data import bearer_headers, create_api_key, insert_user, insert_users

EXPORT = "/api/v1/users/export"
EXPORT_FULL = "/api/v1/users/export-full"
PARTNER_FIELDS = ("id", "name", "created_at")
# Real addresses and names, each distinct enough to spot in any document.
USERS = [(f"Real.Person{n}@Example.com", f"Realname Person{n}") for n in range(5)]
DELETED = ("gone.person@example.com", "Gone Person")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "anonymize_key": SecretStr("key-limits-anonymize-key-0123456789abcdef"),
            "export_rate_limit": "10000/minute",
        }
    )


@pytest.fixture
def users(db_url: str) -> None:
    insert_users(db_url, USERS)
    insert_user(db_url, DELETED[0], name=DELETED[1], is_deleted=True)


def _key(db_url: str, **limits: Any) -> dict[str, str]:
    secret = create_api_key(db_url, ["users:export_full"], **limits)[1]
    return {"X-API-Key": secret, "Accept-Encoding": "identity"}


def _records(format_name: str, document: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and records as a consumer reads them, with a standard parser."""
    if format_name == "csv":
        header, *rows = csv.reader(io.StringIO(document.decode(), newline=""))
    elif format_name == "xlsx":
        sheet = openpyxl.load_workbook(io.BytesIO(document)).worksheets[0]
        header, *rows = ([str(cell) for cell in row] for row in sheet.iter_rows(values_only=True))
    else:
        if format_name == "ndjson":
            records = [json.loads(line) for line in document.decode().splitlines()]
        else:
            records = json.loads(document)
        assert records, "every export here holds users"
        return list(records[0]), records
    return header, [dict(zip(header, row, strict=True)) for row in rows]


def _real_values() -> set[str]:
    """Every real email and name in the table, deleted users' included, folded."""
    return {value.casefold() for pair in [*USERS, DELETED] for value in pair}


def _assert_no_real_identity(document: bytes) -> None:
    """No real email or name anywhere in a text document (XLSX: its parts unzipped)."""
    if document.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(document)) as archive:
            document = b"".join(archive.read(name) for name in archive.namelist())
    text = document.decode(errors="replace").casefold()
    for value in _real_values():
        assert value not in text


def _assert_refused(response: Any, detail: str | None = None) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str)
    if detail is not None:
        assert body["detail"] == detail


# --- the allow-list ------------------------------------------------------------


@pytest.mark.parametrize("format_name", list(FORMATS))
def test_a_limited_key_gets_only_its_fields_in_every_format(
    client: TestClient, db_url: str, users: None, format_name: str
) -> None:
    key = _key(db_url, fields=PARTNER_FIELDS)
    response = client.get(EXPORT_FULL, params={"format": format_name}, headers=key)
    assert response.status_code == 200, response.text
    header, records = _records(format_name, response.content)
    assert header == list(PARTNER_FIELDS)
    assert len(records) == len(USERS)
    assert {str(record["name"]) for record in records} == {name for _, name in USERS}
    assert b"@example.com" not in response.content.lower()


def test_the_default_columns_keep_their_order_whatever_the_allow_list_order(
    client: TestClient, db_url: str, users: None
) -> None:
    key = _key(db_url, fields=["is_admin", "created_at", "id", "last_login_at"])
    response = client.get(EXPORT_FULL, params={"format": "ndjson"}, headers=key)
    assert response.status_code == 200, response.text
    # The default set never holds last_login_at: a key must ask for it by name.
    assert list(json.loads(response.text.splitlines()[0])) == ["id", "created_at", "is_admin"]
    chosen = client.get(EXPORT_FULL, params={"fields": "last_login_at,id"}, headers=key)
    assert chosen.status_code == 200, chosen.text
    assert chosen.text.splitlines()[0] == "last_login_at,id"


def test_asking_for_a_forbidden_field_is_403_naming_it(
    client: TestClient, db_url: str, users: None
) -> None:
    key = _key(db_url, fields=PARTNER_FIELDS)
    response = client.get(EXPORT_FULL, params={"fields": "id,email"}, headers=key)
    _assert_refused(
        response,
        "This API key may not export the field 'email'. Allowed: id, name, created_at.",
    )
    both = client.get(EXPORT_FULL, params={"fields": "is_admin,id,email"}, headers=key)
    _assert_refused(
        both,
        "This API key may not export the fields 'is_admin', 'email'. "
        "Allowed: id, name, created_at.",
    )


def test_an_unknown_field_is_still_400_for_a_limited_key(
    client: TestClient, db_url: str, users: None
) -> None:
    key = _key(db_url, fields=PARTNER_FIELDS)
    response = client.get(EXPORT_FULL, params={"fields": "id,password"}, headers=key)
    assert response.status_code == 400
    assert "Unknown field 'password'" in response.json()["detail"]


def test_the_minimal_export_is_403_when_the_key_may_not_see_email(
    client: TestClient, db_url: str, users: None
) -> None:
    key = _key(db_url, fields=PARTNER_FIELDS)
    _assert_refused(
        client.get(EXPORT, headers=key),
        "This API key may not export the field 'email'. Allowed: id, name, created_at.",
    )


def test_a_key_limited_outside_the_defaults_must_name_its_fields(
    client: TestClient, db_url: str, users: None
) -> None:
    key = _key(db_url, fields=["last_login_at"])
    _assert_refused(client.get(EXPORT_FULL, headers=key))


def test_a_limited_sync_keeps_is_deleted_last_and_nothing_else(
    client: TestClient, db_url: str, users: None
) -> None:
    key = _key(db_url, fields=PARTNER_FIELDS)
    response = client.get(
        EXPORT_FULL, params={"cursor": cursor.encode(0), "format": "ndjson"}, headers=key
    )
    assert response.status_code == 200, response.text
    records = [json.loads(line) for line in response.text.splitlines()]
    assert all(list(record) == [*PARTNER_FIELDS, "is_deleted"] for record in records)
    assert [record["name"] for record in records if record["is_deleted"]] == [DELETED[1]]
    # Asked for by name, is_deleted is a field like any other.
    _assert_refused(client.get(EXPORT_FULL, params={"fields": "id,is_deleted"}, headers=key))


def test_an_admin_token_and_an_unlimited_key_have_no_limits(
    client: TestClient, db_url: str, settings: Settings, users: None
) -> None:
    admin = bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))
    for headers in (admin, _key(db_url)):
        response = client.get(EXPORT_FULL, params={"anonymize": "false"}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.text.splitlines()[0] == ",".join(FULL.header)
        assert USERS[0][0] in response.text


# --- anonymized only -----------------------------------------------------------


@pytest.mark.parametrize("format_name", list(FORMATS))
@pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL])
def test_an_anonymized_only_key_gets_pseudonyms_by_default_in_every_format(
    client: TestClient, db_url: str, users: None, format_name: str, path: str
) -> None:
    key = _key(db_url, anonymized_only=True)
    response = client.get(path, params={"format": format_name}, headers=key)
    assert response.status_code == 200, response.text
    _header, records = _records(format_name, response.content)
    assert len(records) == len(USERS)
    real = _real_values()
    for record in records:
        assert str(record["email"]).endswith("@example.invalid")
        assert str(record["name"]).startswith("User ")
        assert not {str(value).casefold() for value in record.values()} & real
    _assert_no_real_identity(response.content)


def test_an_anonymized_only_key_may_ask_for_day_but_never_false(
    client: TestClient, db_url: str, users: None
) -> None:
    key = _key(db_url, anonymized_only=True)
    day = client.get(EXPORT_FULL, params={"anonymize": "day", "format": "ndjson"}, headers=key)
    assert day.status_code == 200, day.text
    first = json.loads(day.text.splitlines()[0])
    assert first["created_at"].endswith("T00:00:00Z")
    assert first["email"].endswith("@example.invalid")
    for spelling in ("false", "0", "off", "FALSE"):
        _assert_refused(
            client.get(EXPORT_FULL, params={"anonymize": spelling}, headers=key),
            "This API key gets anonymized data only: anonymize=false is not allowed "
            "(use true or day).",
        )


@pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL])
def test_an_anonymized_only_key_may_not_filter_by_email(
    client: TestClient, db_url: str, users: None, path: str
) -> None:
    key = _key(db_url, anonymized_only=True)
    for address in (USERS[0][0], "nobody@example.com", ""):
        _assert_refused(
            client.get(path, params={"email": address, "anonymize": "true"}, headers=key),
            "This API key gets anonymized data only: it may not filter by email "
            "(a match would confirm that an address belongs to a user).",
        )


def test_an_anonymized_only_sync_stays_anonymized_deleted_users_included(
    client: TestClient, db_url: str, users: None
) -> None:
    key = _key(db_url, anonymized_only=True)
    first = client.get(EXPORT_FULL, headers=key)
    assert first.status_code == 200
    insert_user(db_url, "late.person@example.com", name="Late Person")
    for since in (cursor.encode(0), first.headers[cursor.HEADER]):
        response = client.get(
            EXPORT_FULL, params={"cursor": since, "format": "ndjson"}, headers=key
        )
        assert response.status_code == 200, response.text
        assert b"late.person" not in response.content.lower()
        assert b"Late Person" not in response.content
        _assert_no_real_identity(response.content)


def test_an_anonymized_only_key_is_refused_while_anonymization_is_off(
    db_url: str, settings: Settings, users: None
) -> None:
    key = _key(db_url, anonymized_only=True)
    off = settings.model_copy(update={"feature_users_export_anonymized": False})
    with TestClient(create_app(off)) as client:
        response = client.get(EXPORT_FULL, headers=key)
    _assert_refused(response, "Feature 'users:export_anonymized' is disabled")


# --- every combination ---------------------------------------------------------

# Keys: an allow-list; anonymized-only; both (with the minimal export's columns).
KEYS: dict[str, dict[str, Any]] = {
    "partner": {"fields": PARTNER_FIELDS},
    "anonymized": {"anonymized_only": True},
    "both": {"fields": ("id", "email", "name", "is_active"), "anonymized_only": True},
}
FIELD_CHOICES = [None, "id", "id,email", "name,created_at", "is_deleted", "last_login_at,id"]
ANONYMIZE = [None, "false", "true", "day"]


def _expected_status(limits: dict[str, Any], path: str, params: dict[str, str]) -> int:
    """What the rules say, computed apart from the code under test."""
    allowed = limits.get("fields")
    anonymized_only = limits.get("anonymized_only", False)
    if allowed is not None:
        if path == EXPORT:
            wanted = ["id", "email", "name"]
        elif "fields" in params:
            wanted = params["fields"].split(",")
        else:
            wanted = []
        if any(name not in allowed for name in wanted):
            return 403
    if anonymized_only and ("email" in params or params.get("anonymize") == "false"):
        return 403
    return 200


def _combinations() -> list[tuple[str, dict[str, str]]]:
    cases: list[tuple[str, dict[str, str]]] = []
    formats = itertools.cycle(FORMATS)
    for fields, anonymize, email, sync in itertools.product(
        FIELD_CHOICES, ANONYMIZE, (False, True), (False, True)
    ):
        params = {"format": next(formats)}
        if fields is not None:
            params["fields"] = fields
        if anonymize is not None:
            params["anonymize"] = anonymize
        if email:
            params["email"] = USERS[1][0].upper()
        if sync:
            params["cursor"] = cursor.encode(0)
        cases.append((EXPORT_FULL, params))
        if fields is None and not sync:
            cases.append((EXPORT, dict(params)))
    return cases


@pytest.mark.parametrize("key_name", list(KEYS))
def test_no_parameter_combination_gets_a_limited_key_more_than_it_may_see(
    client: TestClient, db_url: str, users: None, key_name: str
) -> None:
    limits = KEYS[key_name]
    key = _key(db_url, **limits)
    allowed = set(limits.get("fields") or [*FULL.header, "last_login_at", "is_deleted"])
    seen = {200: 0, 403: 0}
    for path, params in _combinations():
        response = client.get(path, params=params, headers=key)
        expected = _expected_status(limits, path, params)
        assert response.status_code == expected, (path, params, response.text)
        seen[expected] += 1
        if expected == 403:
            _assert_refused(response)
            continue
        header, records = _records(params["format"], response.content)
        extra = {"is_deleted"} if "cursor" in params else set()
        assert set(header) <= allowed | extra, (path, params, header)
        if limits.get("anonymized_only"):
            _assert_no_real_identity(response.content)
            for record in records:
                values = {str(value).casefold() for value in record.values()}
                assert not values & _real_values(), (path, params, record)
    # The matrix exercises both answers for every key.
    assert seen[200] and seen[403], seen


# --- what the trail and the validators say ---------------------------------------


def test_the_audit_trail_records_the_fields_delivered_and_the_anonymization(
    client: TestClient, db_url: str, users: None
) -> None:
    partner = _key(db_url, fields=PARTNER_FIELDS)
    anonymized = _key(db_url, anonymized_only=True)
    assert client.get(EXPORT_FULL, headers=partner).status_code == 200
    assert client.get(EXPORT, params={"anonymize": "day"}, headers=anonymized).status_code == 200
    assert client.get(EXPORT_FULL, headers=anonymized).status_code == 200
    assert client.get(EXPORT_FULL, params={"fields": "email"}, headers=partner).status_code == 403
    rows = settled_rows(db_url, 4)
    delivered = [(row["endpoint"], row["fields"], row["anonymized"], row["status"]) for row in rows]
    assert delivered == [
        ("export-full", "id,name,created_at", "false", 200),
        ("export", "id,email,name", "day", 200),
        ("export-full", ",".join(FULL.header), "true", 200),
        # Refused: nothing was delivered, and the detail says why.
        ("export-full", None, None, 403),
    ]
    assert rows[3]["outcome"] == "denied"
    assert "'email'" in rows[3]["detail"]


def test_a_limited_and_an_unlimited_key_never_share_an_etag(
    client: TestClient, db_url: str, users: None
) -> None:
    params = {"fields": "id,name,created_at"}
    tags = {
        name: client.get(EXPORT_FULL, params=params, headers=_key(db_url, **limits)).headers["ETag"]
        for name, limits in {
            "unlimited": {},
            "partner": {"fields": PARTNER_FIELDS},
            "wider": {"fields": (*PARTNER_FIELDS, "email")},
        }.items()
    }
    assert len(set(tags.values())) == 3, tags
    # The unlimited key's copy does not revalidate through the limited key.
    partner = _key(db_url, fields=PARTNER_FIELDS)
    again = client.get(
        EXPORT_FULL, params=params, headers={**partner, "If-None-Match": tags["unlimited"]}
    )
    assert again.status_code == 200
    # Its own copy does.
    same = client.get(
        EXPORT_FULL, params=params, headers={**partner, "If-None-Match": tags["partner"]}
    )
    assert same.status_code == 304
