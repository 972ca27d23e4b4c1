"""Each export format's body, read back by the contract tests' deserializers, matches
the schema its 200 documents, and the reading misses no record.

Without this, a deserializer that read nothing (or a format schemathesis skipped)
would let the fuzzing pass while checking no body at all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from reviewpoint.exports.formats import FORMATS
from tests.contract.fuzzing import SCHEMA, read_csv, read_ndjson, read_xlsx
from tests.data import bearer_headers, insert_user, insert_users

READERS: dict[str, Any] = {
    "csv": read_csv,
    "ndjson": read_ndjson,
    "xlsx": read_xlsx,
    # JSON needs no registered reader: schemathesis parses it.
    "json": lambda _ctx, response: response.json(),
}
# Names that test each format's spelling: none, formula characters, quotes, non-ASCII.
ROWS = [
    ("plain@example.com", "Plain Name"),
    ("noname@example.com", None),
    ("formula@example.com", "=SUM(A1)"),
    ("quoted@example.com", 'Say "hi", then\nleave'),
    ("unicode@example.com", "Zoë Ünïcödé"),
]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/users/export", {}),
        ("/api/v1/users/export-full", {}),
        ("/api/v1/users/export-full", {"fields": "id,last_login_at,is_deleted,created_at"}),
    ],
)
def test_export_body_matches_its_documented_schema(
    client: TestClient,
    settings: Settings,
    db_url: str,
    path: str,
    query: dict[str, str],
) -> None:
    admin = insert_user(db_url, "admin@example.com", is_admin=True)
    insert_users(db_url, ROWS)
    for format_name in FORMATS:
        response = client.get(
            path, params={"format": format_name, **query}, headers=bearer_headers(settings, admin)
        )
        assert response.status_code == 200, response.text
        operation = SCHEMA[path]["GET"]
        # The same reading and check schemathesis applies to every fuzzed export.
        assert operation.validate_response(response) is None, format_name
        records = READERS[format_name](None, schemathesis.Response.from_any(response))
        assert len(records) == len(ROWS) + 1, format_name
        assert records[-1]["id"] in (admin + len(ROWS), str(admin + len(ROWS))), format_name


@pytest.mark.parametrize(
    ("media_type", "body"),
    [
        ("text/csv", b"id,email,name\r\nseven,a@example.com,A\r\n"),
        ("application/x-ndjson", b'{"id":"7","email":"a@example.com","name":"A"}\n'),
        ("application/json", b'[{"id":7,"email":"a@example.com"}]'),
    ],
)
def test_a_body_off_its_schema_fails_the_check(media_type: str, body: bytes) -> None:
    # The check has teeth: an id spelled wrong for the format, a required column missing.
    request = httpx.Request("GET", "http://testserver/api/v1/users/export")
    response = httpx.Response(
        200, headers={"content-type": media_type}, content=body, request=request
    )
    response.elapsed = timedelta(0)
    with pytest.raises(AssertionError):
        SCHEMA["/api/v1/users/export"]["GET"].validate_response(response)
