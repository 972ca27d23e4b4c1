"""A CSV of one column keeps its empty values as records (found by tests/contract).

With `fields=name` (or `last_login_at`), a user without one was a blank line:
`csv` reads it as a row of no fields, pandas and most readers skip it, so the
record vanished and the file held fewer rows than `X-Export-Rows` said.
Python's `csv` writes such a record `""`; the database now does too.
"""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from reviewpoint.config import Settings
from reviewpoint.main import create_app
from tests.data import create_api_key, insert_users

EXPORT_FULL = "/api/v1/users/export-full"


@pytest.mark.parametrize("excel_safe", ["true", "false"])
@pytest.mark.parametrize("field", ["name", "last_login_at"])
def test_a_lone_empty_field_is_quoted_not_a_blank_line(
    client: TestClient, db_url: str, field: str, excel_safe: str
) -> None:
    insert_users(db_url, [("a@example.com", None), ("b@example.com", ""), ("c@example.com", "C")])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    params = {"fields": field, "excel_safe": excel_safe}
    response = client.get(EXPORT_FULL, params=params, headers=key)
    assert response.status_code == 200
    last = "C" if field == "name" else '""'
    assert response.content == f'{field}\r\n""\r\n""\r\n{last}\r\n'.encode()
    records = list(csv.reader(io.StringIO(response.text, newline="")))
    assert len(records) - 1 == int(response.headers["X-Export-Rows"]) == 3
    assert all(len(record) == 1 for record in records)


def test_a_lone_empty_pseudonym_is_quoted_not_a_blank_line(settings: Settings, db_url: str) -> None:
    insert_users(db_url, [("a@example.com", None), ("b@example.com", ""), ("c@example.com", "C")])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    changes = {"anonymize_key": SecretStr("k" * 32), "feature_users_export_anonymized": True}
    with TestClient(create_app(settings.model_copy(update=changes))) as client:
        params = {"fields": "name", "anonymize": "true"}
        response = client.get(EXPORT_FULL, params=params, headers=key)
    assert response.status_code == 200, response.text
    assert response.content.startswith(b'name\r\n""\r\n""\r\n')
    records = list(csv.reader(io.StringIO(response.text, newline="")))
    assert [len(record) for record in records] == [1, 1, 1, 1]
    assert records[3] != ["C"]  # a pseudonym, not the name
