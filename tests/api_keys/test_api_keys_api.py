"""The administrators' API-key API: issue (secret shown once), list, revoke."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from reviewpoint.auth.deps import KEY_ON_BEARER_ROUTE
from reviewpoint.config import Settings
from reviewpoint.db import create_engine
from tests.data import API_KEY_PUBLIC_FIELDS as PUBLIC_FIELDS
from tests.data import bearer_headers, create_api_key, insert_user

API_KEYS = "/api/v1/api-keys"
EXPORT_FULL = "/api/v1/users/export-full"
SECRET_FORMAT = re.compile(r"rvp_([0-9a-f]{12})_[0-9A-Za-z]{43}")


def _new_key(**fields: object) -> dict[str, object]:
    return {"name": "nightly sync", "scopes": ["users:export_full"], **fields}


def _stored_row(db_url: str, key_id: int) -> dict[str, Any]:
    """The api_keys row as the database holds it, read with plain SQL."""

    async def run() -> dict[str, Any]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(
                    text("SELECT * FROM api_keys WHERE id = :id"), {"id": key_id}
                )
                return dict(result.mappings().one())
        finally:
            await engine.dispose()

    return asyncio.run(run())


# POST /api/v1/api-keys


def test_create_api_key_is_201_with_the_secret_in_the_documented_format(
    client: TestClient, admin: dict[str, str], admin_id: int
) -> None:
    response = client.post(API_KEYS, json=_new_key(), headers=admin)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == PUBLIC_FIELDS | {"secret"}
    match = SECRET_FORMAT.fullmatch(body["secret"])
    assert match is not None, body["secret"]
    assert body["prefix"] == match.group(1)
    assert body["name"] == "nightly sync"
    assert body["scopes"] == ["users:export_full"]
    assert body["created_by"] == admin_id
    assert body["created_by_email"] == "admin@example.com"
    assert body["last_used_at"] is None
    assert body["expires_at"] is None
    assert body["revoked_at"] is None
    assert body["rotated_from_id"] is None


def test_created_secret_works_as_an_export_key(client: TestClient, admin: dict[str, str]) -> None:
    secret = client.post(API_KEYS, json=_new_key(), headers=admin).json()["secret"]
    response = client.get(EXPORT_FULL, headers={"X-API-Key": secret})
    assert response.status_code == 200
    assert "admin@example.com" in response.text


def test_each_created_key_has_its_own_secret_and_prefix(
    client: TestClient, admin: dict[str, str]
) -> None:
    first = client.post(API_KEYS, json=_new_key(), headers=admin).json()
    second = client.post(API_KEYS, json=_new_key(), headers=admin).json()
    assert first["secret"] != second["secret"]
    assert first["prefix"] != second["prefix"]


def test_create_with_expiry_sets_expires_at_that_many_days_ahead(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = client.post(API_KEYS, json=_new_key(expires_in_days=7), headers=admin).json()
    created_at = datetime.fromisoformat(body["created_at"])
    assert datetime.fromisoformat(body["expires_at"]) - created_at == timedelta(days=7)


def test_create_keeps_each_scope_once(client: TestClient, admin: dict[str, str]) -> None:
    scopes = ["users:export", "users:export_full", "users:export"]
    body = client.post(API_KEYS, json=_new_key(scopes=scopes), headers=admin).json()
    assert body["scopes"] == ["users:export", "users:export_full"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scopes": ["users:delete"]}, "scopes"),
        ({"scopes": ["users:export", "admin"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"name": ""}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": 3651}, "expires_in_days"),
        ({"secret": "rvp_chosen_by_the_caller"}, "secret"),
    ],
    ids=[
        "unknown-scope",
        "one-unknown-scope",
        "no-scopes",
        "empty-name",
        "long-name",
        "zero-days",
        "over-ten-years",
        "caller-chosen-secret",
    ],
)
def test_create_with_invalid_input_is_422_naming_the_field(
    client: TestClient, db_url: str, admin: dict[str, str], fields: dict[str, object], field: str
) -> None:
    response = client.post(API_KEYS, json=_new_key(**fields), headers=admin)
    assert response.status_code == 422
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}
    assert client.get(API_KEYS, headers=admin).json() == []


def test_database_stores_only_the_sha256_of_the_secret(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    body = client.post(API_KEYS, json=_new_key(), headers=admin).json()
    secret = body["secret"]
    row = _stored_row(db_url, body["id"])
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["prefix"] == body["prefix"]
    random_part = secret.rsplit("_", 1)[1]
    for column, value in row.items():
        assert random_part not in str(value), column


# GET /api/v1/api-keys


def test_list_api_keys_shows_every_key_by_id_without_secret_or_hash(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    created = [
        client.post(API_KEYS, json=_new_key(name=name), headers=admin).json()
        for name in ("first", "second")
    ]
    response = client.get(API_KEYS, headers=admin)
    assert response.status_code == 200
    listed = response.json()
    assert [key["id"] for key in listed] == [key["id"] for key in created]
    assert [key["name"] for key in listed] == ["first", "second"]
    for key in listed:
        assert set(key) == PUBLIC_FIELDS
    for key in created:
        assert key["secret"] not in response.text
        assert key["secret"].rsplit("_", 1)[1] not in response.text
        assert _stored_row(db_url, key["id"])["secret_hash"] not in response.text


def test_list_api_keys_includes_keys_made_outside_the_api(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"], name="from the cli")
    listed = client.get(API_KEYS, headers=admin).json()
    assert [
        (key["id"], key["name"], key["created_by"], key["created_by_email"]) for key in listed
    ] == [(key_id, "from the cli", None, None)]


def test_list_api_keys_names_the_admin_who_created_each_key(
    client: TestClient, db_url: str, settings: Settings, admin: dict[str, str], admin_id: int
) -> None:
    other_id = insert_user(db_url, "second.admin@example.com", is_admin=True)
    client.post(API_KEYS, json=_new_key(name="first"), headers=admin)
    client.post(API_KEYS, json=_new_key(name="second"), headers=bearer_headers(settings, other_id))
    listed = client.get(API_KEYS, headers=admin).json()
    assert [(key["name"], key["created_by"], key["created_by_email"]) for key in listed] == [
        ("first", admin_id, "admin@example.com"),
        ("second", other_id, "second.admin@example.com"),
    ]


# DELETE /api/v1/api-keys/{id}


def test_revoke_api_key_returns_it_with_revoked_at(
    client: TestClient, admin: dict[str, str]
) -> None:
    key_id = client.post(API_KEYS, json=_new_key(), headers=admin).json()["id"]
    response = client.delete(f"{API_KEYS}/{key_id}", headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert body["id"] == key_id
    assert body["revoked_at"] is not None
    assert client.get(API_KEYS, headers=admin).json()[0]["revoked_at"] == body["revoked_at"]


def test_revoked_key_stops_working(client: TestClient, admin: dict[str, str]) -> None:
    created = client.post(API_KEYS, json=_new_key(), headers=admin).json()
    key = {"X-API-Key": created["secret"]}
    assert client.get(EXPORT_FULL, headers=key).status_code == 200
    assert client.delete(f"{API_KEYS}/{created['id']}", headers=admin).status_code == 200
    response = client.get(EXPORT_FULL, headers=key)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


def test_revoking_twice_is_409_saying_since_when_and_keeps_the_first_revocation(
    client: TestClient, admin: dict[str, str]
) -> None:
    key_id = client.post(API_KEYS, json=_new_key(), headers=admin).json()["id"]
    first = client.delete(f"{API_KEYS}/{key_id}", headers=admin).json()["revoked_at"]
    again = client.delete(f"{API_KEYS}/{key_id}", headers=admin)
    assert again.status_code == 409
    since = datetime.fromisoformat(first).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert again.json() == {"detail": f"API key {key_id} is already revoked (since {since})"}
    assert client.get(API_KEYS, headers=admin).json()[0]["revoked_at"] == first


def test_revoking_an_unknown_key_is_404(client: TestClient, admin: dict[str, str]) -> None:
    response = client.delete(f"{API_KEYS}/999999", headers=admin)
    assert response.status_code == 404
    assert response.json() == {"detail": "API key not found"}


# Who may use this API


def _request(
    client: TestClient, method: str, key_id: int, headers: dict[str, str]
) -> httpx.Response:
    if method == "POST":
        return client.post(API_KEYS, json=_new_key(), headers=headers)
    if method == "GET":
        return client.get(API_KEYS, headers=headers)
    return client.delete(f"{API_KEYS}/{key_id}", headers=headers)


METHODS = pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])


@METHODS
def test_api_keys_api_as_non_admin_is_403_and_changes_nothing(
    client: TestClient, db_url: str, settings: Settings, admin: dict[str, str], method: str
) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"])
    user = bearer_headers(settings, insert_user(db_url, "plain@example.com"))
    response = _request(client, method, key_id, user)
    assert response.status_code == 403
    assert response.json() == {"detail": "Administrator privileges required"}
    listed = client.get(API_KEYS, headers=admin).json()
    assert [(key["id"], key["revoked_at"]) for key in listed] == [(key_id, None)]


@METHODS
def test_api_keys_api_without_token_is_401_with_www_authenticate(
    client: TestClient, db_url: str, method: str
) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"])
    response = _request(client, method, key_id, {})
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]


@METHODS
def test_api_keys_api_does_not_accept_an_api_key(
    client: TestClient, db_url: str, method: str
) -> None:
    key_id, secret = create_api_key(db_url, ["users:export_full"])
    response = _request(client, method, key_id, {"X-API-Key": secret})
    # The wrong kind of credential: 403, not a 401 challenge the key cannot meet.
    assert response.status_code == 403
    assert response.json() == {"detail": KEY_ON_BEARER_ROUTE}
    assert "WWW-Authenticate" not in response.headers


# A key issued over HTTP stands on its issuer (api_keys.service.find_live)


def test_a_key_stops_with_its_issuers_deactivation_and_returns_with_their_reactivation(
    client: TestClient, settings: Settings, admin: dict[str, str], db_url: str
) -> None:
    issuer_id = insert_user(db_url, "issuer@example.com", is_admin=True)
    issued = client.post(API_KEYS, json=_new_key(), headers=bearer_headers(settings, issuer_id))
    key = {"X-API-Key": issued.json()["secret"]}
    assert client.get(EXPORT_FULL, headers=key).status_code == 200

    issuer = f"/api/v1/users/{issuer_id}"
    assert client.patch(issuer, json={"is_active": False}, headers=admin).status_code == 200
    refused = client.get(EXPORT_FULL, headers=key)
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Invalid, expired or revoked API key"}
    # Not revoked: the listing still shows it live, and it works again with its issuer.
    assert client.get(API_KEYS, headers=admin).json()[0]["revoked_at"] is None
    assert client.patch(issuer, json={"is_active": True}, headers=admin).status_code == 200
    assert client.get(EXPORT_FULL, headers=key).status_code == 200


def test_a_rotation_by_another_admin_keeps_the_integration_past_the_issuers_departure(
    client: TestClient, settings: Settings, admin: dict[str, str], db_url: str
) -> None:
    issuer_id = insert_user(db_url, "issuer@example.com", is_admin=True)
    issued = client.post(API_KEYS, json=_new_key(), headers=bearer_headers(settings, issuer_id))
    rotated = client.post(f"{API_KEYS}/{issued.json()['id']}/rotate", headers=admin)
    assert rotated.status_code == 201
    assert client.delete(f"/api/v1/users/{issuer_id}", headers=admin).status_code == 204
    assert (
        client.get(EXPORT_FULL, headers={"X-API-Key": issued.json()["secret"]}).status_code == 401
    )
    assert (
        client.get(EXPORT_FULL, headers={"X-API-Key": rotated.json()["secret"]}).status_code == 200
    )
