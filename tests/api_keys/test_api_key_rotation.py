"""Rotating an export API key over HTTP: a new secret at once, the old one for a grace period."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from reviewpoint.api_keys.models import ApiKey
from reviewpoint.auth.deps import KEY_ON_BEARER_ROUTE
from reviewpoint.config import Settings
from reviewpoint.db import create_engine, utcnow
from tests.data import bearer_headers, create_api_key, insert_user

API_KEYS = "/api/v1/api-keys"
EXPORT = "/api/v1/users/export"
# Requests take a few seconds at most: deadlines computed from "now" are checked to this.
SLACK = timedelta(seconds=30)


def _rotate_path(key_id: int) -> str:
    return f"{API_KEYS}/{key_id}/rotate"


def _create(client: TestClient, admin: dict[str, str], **fields: object) -> dict[str, object]:
    body = {"name": "nightly sync", "scopes": ["users:export", "users:export_full"], **fields}
    response = client.post(API_KEYS, json=body, headers=admin)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def _listed(client: TestClient, admin: dict[str, str]) -> dict[int, dict[str, object]]:
    return {key["id"]: key for key in client.get(API_KEYS, headers=admin).json()}


def _exports(client: TestClient, secret: object) -> int:
    return client.get(EXPORT, headers={"X-API-Key": str(secret)}).status_code


def _when(value: object) -> datetime:
    return datetime.fromisoformat(str(value))


def _move_expiry(db_url: str, key_id: int, expires_at: datetime) -> None:
    """The clock passing the old key's deadline, without waiting for it: the row's
    `expires_at` is what every check compares with now."""

    async def run() -> None:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    update(ApiKey).where(ApiKey.id == key_id).values(expires_at=expires_at)
                )
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_rotate_is_201_with_a_new_secret_of_the_same_name_scopes_and_expiry(
    client: TestClient, admin: dict[str, str], admin_id: int
) -> None:
    old = _create(client, admin, expires_in_days=30)
    response = client.post(_rotate_path(int(str(old["id"]))), headers=admin)
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["id"] != old["id"]
    assert new["secret"] != old["secret"]
    assert new["prefix"] != old["prefix"]
    assert str(new["secret"]).startswith(f"rvp_{new['prefix']}_")
    assert (new["name"], new["scopes"], new["expires_at"]) == (
        old["name"],
        old["scopes"],
        old["expires_at"],
    )
    assert new["rotated_from_id"] == old["id"]
    assert (new["created_by"], new["created_by_email"]) == (admin_id, "admin@example.com")
    assert new["revoked_at"] is None
    assert _exports(client, new["secret"]) == 200


def test_rotated_key_keeps_working_for_the_default_hour_of_grace(
    client: TestClient, admin: dict[str, str]
) -> None:
    old = _create(client, admin)
    before = utcnow()
    assert client.post(_rotate_path(int(str(old["id"]))), headers=admin).status_code == 201
    deadline = _when(_listed(client, admin)[int(str(old["id"]))]["expires_at"])
    assert before + timedelta(minutes=60) <= deadline <= utcnow() + timedelta(minutes=60)
    assert _exports(client, old["secret"]) == 200


def test_old_secret_works_during_the_grace_and_fails_after_it(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    old = _create(client, admin)
    old_id = int(str(old["id"]))
    rotated = client.post(_rotate_path(old_id), json={"grace_minutes": 5}, headers=admin)
    assert rotated.status_code == 201
    deadline = _when(_listed(client, admin)[old_id]["expires_at"])
    assert abs(deadline - (utcnow() + timedelta(minutes=5))) < SLACK
    assert _exports(client, old["secret"]) == 200

    _move_expiry(db_url, old_id, utcnow() - timedelta(seconds=1))
    refused = client.get(EXPORT, headers={"X-API-Key": str(old["secret"])})
    assert refused.status_code == 401
    assert "WWW-Authenticate" in refused.headers
    assert _exports(client, rotated.json()["secret"]) == 200


def test_rotate_with_no_grace_stops_the_old_secret_at_once(
    client: TestClient, admin: dict[str, str]
) -> None:
    old = _create(client, admin)
    rotated = client.post(
        _rotate_path(int(str(old["id"]))), json={"grace_minutes": 0}, headers=admin
    )
    assert rotated.status_code == 201
    assert _exports(client, old["secret"]) == 401
    assert _exports(client, rotated.json()["secret"]) == 200


def test_grace_never_outlives_the_old_keys_own_expiry(
    client: TestClient, admin: dict[str, str]
) -> None:
    old = _create(client, admin, expires_in_days=1)
    rotated = client.post(
        _rotate_path(int(str(old["id"]))), json={"grace_minutes": 7 * 24 * 60}, headers=admin
    )
    assert rotated.status_code == 201
    assert _listed(client, admin)[int(str(old["id"]))]["expires_at"] == old["expires_at"]
    assert rotated.json()["expires_at"] == old["expires_at"]


def test_rotating_twice_makes_two_keys_and_keeps_the_first_deadline(
    client: TestClient, admin: dict[str, str]
) -> None:
    old = _create(client, admin)
    old_id = int(str(old["id"]))
    first = client.post(_rotate_path(old_id), json={"grace_minutes": 5}, headers=admin)
    deadline = _listed(client, admin)[old_id]["expires_at"]
    second = client.post(_rotate_path(old_id), json={"grace_minutes": 60}, headers=admin)
    assert (first.status_code, second.status_code) == (201, 201)
    listed = _listed(client, admin)
    assert listed[old_id]["expires_at"] == deadline
    assert [key["rotated_from_id"] for key in listed.values()] == [None, old_id, old_id]
    # The new keys live as long as the old one would have: the grace deadline is not theirs.
    assert (first.json()["expires_at"], second.json()["expires_at"]) == (None, None)
    for secret in (old["secret"], first.json()["secret"], second.json()["secret"]):
        assert _exports(client, secret) == 200


def test_every_rotation_passes_on_the_original_expiry_not_a_grace_deadline(
    client: TestClient, admin: dict[str, str]
) -> None:
    old = _create(client, admin, expires_in_days=30)
    old_id = int(str(old["id"]))
    first = client.post(_rotate_path(old_id), json={"grace_minutes": 5}, headers=admin).json()
    # The successor rotated in turn, then the original key again.
    second = client.post(_rotate_path(int(first["id"])), headers=admin).json()
    third = client.post(_rotate_path(old_id), headers=admin).json()
    assert [key["expires_at"] for key in (first, second, third)] == [old["expires_at"]] * 3
    assert third["rotated_from_id"] == old_id


def test_rotating_a_revoked_key_is_409_and_issues_nothing(
    client: TestClient, admin: dict[str, str]
) -> None:
    old = _create(client, admin)
    old_id = int(str(old["id"]))
    assert client.delete(f"{API_KEYS}/{old_id}", headers=admin).status_code == 200
    response = client.post(_rotate_path(old_id), headers=admin)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith(f"API key {old_id} is revoked (since ")
    assert detail.endswith("issue a new key instead")
    assert list(_listed(client, admin)) == [old_id]
    assert _exports(client, old["secret"]) == 401


def test_rotating_an_expired_key_is_409_and_issues_nothing(
    client: TestClient, admin: dict[str, str]
) -> None:
    old = _create(client, admin)
    old_id = int(str(old["id"]))
    first = client.post(_rotate_path(old_id), json={"grace_minutes": 0}, headers=admin)
    assert first.status_code == 201
    again = client.post(_rotate_path(old_id), headers=admin)
    assert again.status_code == 409
    assert again.json()["detail"].startswith(f"API key {old_id} is expired (since ")
    assert list(_listed(client, admin)) == [old_id, first.json()["id"]]


def test_rotating_an_unknown_key_is_404(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(_rotate_path(999_999), headers=admin)
    assert response.status_code == 404
    assert response.json() == {"detail": "API key not found"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"grace_minutes": -1}, id="negative"),
        pytest.param({"grace_minutes": 7 * 24 * 60 + 1}, id="over-a-week"),
        pytest.param({"grace_minutes": "soon"}, id="not-a-number"),
        pytest.param({"grace_minutes": 5, "secret": "chosen"}, id="unknown-field"),
    ],
)
def test_rotate_with_an_invalid_grace_is_422_and_changes_nothing(
    client: TestClient, admin: dict[str, str], body: dict[str, object]
) -> None:
    old = _create(client, admin)
    response = client.post(_rotate_path(int(str(old["id"]))), json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"
    listed = _listed(client, admin)
    assert list(listed) == [old["id"]]
    assert listed[int(str(old["id"]))]["expires_at"] is None


def test_rotate_response_and_listing_never_show_a_digest(
    client: TestClient, db_url: str, admin: dict[str, str]
) -> None:
    old = _create(client, admin)
    rotated = client.post(_rotate_path(int(str(old["id"]))), headers=admin)
    listing = client.get(API_KEYS, headers=admin)

    async def digests() -> list[str]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(text("SELECT secret_hash FROM api_keys"))
                return [row[0] for row in rows]
        finally:
            await engine.dispose()

    for digest in asyncio.run(digests()):
        assert digest not in rotated.text
        assert digest not in listing.text
    assert "secret_hash" not in rotated.text + listing.text
    assert str(old["secret"]) not in rotated.text + listing.text
    assert str(rotated.json()["secret"]) not in listing.text


# Who may rotate


def test_rotate_as_non_admin_is_403_and_issues_nothing(
    client: TestClient, db_url: str, settings: Settings, admin: dict[str, str]
) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"])
    user = bearer_headers(settings, insert_user(db_url, "plain@example.com"))
    response = client.post(_rotate_path(key_id), headers=user)
    assert response.status_code == 403
    assert list(_listed(client, admin)) == [key_id]


def test_rotate_does_not_accept_the_key_itself(client: TestClient, db_url: str) -> None:
    key_id, secret = create_api_key(db_url, ["users:export_full"])
    response = client.post(_rotate_path(key_id), headers={"X-API-Key": secret})
    assert response.status_code == 403
    assert response.json() == {"detail": KEY_ON_BEARER_ROUTE}
