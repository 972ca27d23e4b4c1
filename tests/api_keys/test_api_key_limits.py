"""Data limits on API keys over HTTP: set at creation, listed, kept by rotation."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

API_KEYS = "/api/v1/api-keys"
EXPORT_FULL = "/api/v1/users/export-full"


def _create(client: TestClient, admin: dict[str, str], **limits: object) -> dict[str, object]:
    response = client.post(
        API_KEYS, json={"name": "partner", "scopes": ["users:export_full"], **limits}, headers=admin
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_a_key_without_limits_lists_none(client: TestClient, admin: dict[str, str]) -> None:
    created = _create(client, admin)
    assert (created["fields"], created["anonymized_only"]) == (None, False)


def test_limits_set_at_creation_are_shown_and_listed(
    client: TestClient, admin: dict[str, str]
) -> None:
    created = _create(client, admin, fields=["id", "name", "created_at"], anonymized_only=True)
    assert created["fields"] == ["id", "name", "created_at"]
    assert created["anonymized_only"] is True
    (listed,) = client.get(API_KEYS, headers=admin).json()
    assert listed["fields"] == ["id", "name", "created_at"]
    assert listed["anonymized_only"] is True


def test_created_limits_apply_to_the_key_at_once(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    created = _create(client, admin, fields=["id", "created_at"])
    key = {"X-API-Key": str(created["secret"])}
    response = client.get(EXPORT_FULL, headers=key)
    assert response.status_code == 200
    assert response.text.splitlines()[0] == "id,created_at"
    assert client.get(EXPORT_FULL, params={"fields": "email"}, headers=key).status_code == 403


def test_rotation_keeps_the_limits(client: TestClient, admin: dict[str, str]) -> None:
    old = _create(client, admin, fields=["id", "is_active"], anonymized_only=True)
    rotated = client.post(f"{API_KEYS}/{old['id']}/rotate", headers=admin)
    assert rotated.status_code == 201
    new = rotated.json()
    assert (new["fields"], new["anonymized_only"]) == (["id", "is_active"], True)
    response = client.get(EXPORT_FULL, headers={"X-API-Key": new["secret"]})
    assert response.status_code == 200
    assert response.text.splitlines()[0] == "id,is_active"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (["id", "password_hash"], "'password_hash'"),
        (["id", "name", "id"], "'id' appears twice"),
        ([], "at least one field"),
        ("id,name", "list"),
    ],
)
def test_bad_fields_are_422_naming_them_and_issue_nothing(
    client: TestClient, admin: dict[str, str], fields: object, named: str
) -> None:
    response = client.post(
        API_KEYS,
        json={"name": "partner", "scopes": ["users:export_full"], "fields": fields},
        headers=admin,
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "fields"]
    assert named in error["msg"]
    assert "input" not in error
    assert client.get(API_KEYS, headers=admin).json() == []


def test_anonymized_only_must_be_a_boolean(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        API_KEYS,
        json={"name": "partner", "scopes": ["users:export"], "anonymized_only": "maybe"},
        headers=admin,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "anonymized_only"]
