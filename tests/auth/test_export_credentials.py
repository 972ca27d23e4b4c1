"""Who may download an export: API keys by scope, admins by token, nobody anonymously."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from reviewpoint.api_keys.models import ApiKey
from reviewpoint.api_keys.schemas import Scope
from reviewpoint.config import Settings
from reviewpoint.db import standalone_session
from tests.data import (
    BULK_PASSWORD,
    bearer_headers,
    create_api_key,
    insert_user,
    insert_users,
    login,
    revoke_api_key,
)

EXPORT = "/api/v1/users/export"
EXPORT_FULL = "/api/v1/users/export-full"
BOTH = pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL], ids=["export", "export-full"])


def _key_row(db_url: str, key_id: int) -> ApiKey:
    async def run() -> ApiKey:
        async with standalone_session(db_url) as session:
            key = await session.get(ApiKey, key_id)
            assert key is not None
            return key

    return asyncio.run(run())


def _expire(db_url: str, key_id: int) -> None:
    async def run() -> None:
        async with standalone_session(db_url) as session:
            moment = datetime.now(UTC) - timedelta(seconds=1)
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(expires_at=moment)
            )

    asyncio.run(run())


def _key(db_url: str, *scopes: Scope) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, scopes)[1]}


# No credentials, or credentials that prove nothing: 401


@BOTH
def test_export_without_credentials_is_401_with_www_authenticate(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert "Bearer" in challenge
    assert "X-API-Key" in challenge
    assert isinstance(response.json()["detail"], str)


def _unknown_key(db_url: str) -> str:
    create_api_key(db_url, ["users:export_full"])  # a real key exists, just not this one
    return "rvp_0123456789ab_" + "A" * 43


def _wrong_secret_for_a_real_id(db_url: str) -> str:
    secret = create_api_key(db_url, ["users:export_full"])[1]
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


def _revoked_key(db_url: str) -> str:
    key_id, secret = create_api_key(db_url, ["users:export_full"])
    revoke_api_key(db_url, key_id)
    return secret


def _expired_key(db_url: str) -> str:
    key_id, secret = create_api_key(db_url, ["users:export_full"], expires_in_days=1)
    _expire(db_url, key_id)
    return secret


BAD_KEYS: dict[str, Callable[[str], str]] = {
    "unknown": _unknown_key,
    "wrong-secret": _wrong_secret_for_a_real_id,
    "revoked": _revoked_key,
    "expired": _expired_key,
    "malformed-no-prefix": lambda db_url: "not-a-key",
    "malformed-short-id": lambda db_url: "rvp_abc_" + "A" * 43,
    "malformed-no-secret": lambda db_url: "rvp_0123456789ab_",
    "malformed-bare-prefix": lambda db_url: "rvp_",
}


@BOTH
@pytest.mark.parametrize("kind", list(BAD_KEYS))
def test_export_with_an_unusable_api_key_is_401_with_www_authenticate(
    client: TestClient, db_url: str, path: str, kind: str
) -> None:
    response = client.get(path, headers={"X-API-Key": BAD_KEYS[kind](db_url)})
    assert response.status_code == 401
    assert "X-API-Key" in response.headers["WWW-Authenticate"]
    assert response.json() == {"detail": "Invalid, expired or revoked API key"}


def test_refused_api_key_is_not_recorded_as_used(client: TestClient, db_url: str) -> None:
    key_id, secret = create_api_key(db_url, ["users:export_full"])
    revoke_api_key(db_url, key_id)
    assert client.get(EXPORT, headers={"X-API-Key": secret}).status_code == 401
    assert _key_row(db_url, key_id).last_used_at is None


def test_key_still_works_until_it_expires(client: TestClient, db_url: str) -> None:
    _, secret = create_api_key(db_url, ["users:export"], expires_in_days=1)
    assert client.get(EXPORT, headers={"X-API-Key": secret}).status_code == 200


# Scopes: users:export_full implies users:export


def test_export_scope_key_downloads_the_minimal_export(client: TestClient, db_url: str) -> None:
    insert_users(db_url, [("someone@example.com", "Some One")])
    response = client.get(EXPORT, headers=_key(db_url, "users:export"))
    assert response.status_code == 200
    assert response.text.startswith("id,email,name\r\n")
    assert "someone@example.com,Some One\r\n" in response.text


def test_export_scope_key_is_403_on_export_full(client: TestClient, db_url: str) -> None:
    response = client.get(EXPORT_FULL, headers=_key(db_url, "users:export"))
    assert response.status_code == 403
    assert response.json() == {"detail": "API key lacks the 'users:export_full' scope"}
    assert "WWW-Authenticate" not in response.headers


@BOTH
def test_export_full_scope_key_downloads_both_exports(
    client: TestClient, db_url: str, path: str
) -> None:
    insert_users(db_url, [("someone@example.com", "Some One")])
    response = client.get(path, headers=_key(db_url, "users:export_full"))
    assert response.status_code == 200
    assert "someone@example.com" in response.text


def test_successful_key_use_sets_last_used_at(client: TestClient, db_url: str) -> None:
    key_id, secret = create_api_key(db_url, ["users:export_full"])
    assert _key_row(db_url, key_id).last_used_at is None
    before = datetime.now(UTC)
    assert client.get(EXPORT_FULL, headers={"X-API-Key": secret}).status_code == 200
    after = datetime.now(UTC)
    # Written beside the request, which does not wait for it.
    deadline = time.monotonic() + 5
    while (last_used_at := _key_row(db_url, key_id).last_used_at) is None:
        assert time.monotonic() < deadline, "last_used_at was never written"
        time.sleep(0.02)
    assert before <= last_used_at <= after
    # Kept to the minute: another use right away writes nothing.
    assert client.get(EXPORT_FULL, headers={"X-API-Key": secret}).status_code == 200
    time.sleep(0.2)
    assert _key_row(db_url, key_id).last_used_at == last_used_at


# Bearer tokens: active admins only


@BOTH
def test_admin_bearer_from_login_downloads_both_exports(
    client: TestClient, db_url: str, path: str
) -> None:
    insert_user(db_url, "admin@example.com", is_admin=True)
    response = client.get(path, headers=login(client, "admin@example.com", BULK_PASSWORD))
    assert response.status_code == 200
    assert "admin@example.com" in response.text


@BOTH
def test_non_admin_bearer_is_403(
    client: TestClient, db_url: str, settings: Settings, path: str
) -> None:
    user_id = insert_user(db_url, "plain@example.com")
    response = client.get(path, headers=bearer_headers(settings, user_id))
    assert response.status_code == 403
    assert response.json() == {"detail": "Administrator privileges required"}


# A deactivated admin's outstanding token is treated like a revoked credential
# (401, as on every other route), not as a known caller lacking a right (403):
# deactivation must end access without waiting for tokens to expire.
@BOTH
def test_inactive_admin_bearer_is_401_as_a_no_longer_valid_credential(
    client: TestClient, db_url: str, settings: Settings, path: str
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True, is_active=False)
    response = client.get(path, headers=bearer_headers(settings, admin_id))
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]


@BOTH
def test_deleted_admin_bearer_is_401(
    client: TestClient, db_url: str, settings: Settings, path: str
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True, is_deleted=True)
    assert client.get(path, headers=bearer_headers(settings, admin_id)).status_code == 401


@BOTH
def test_expired_admin_bearer_is_401(
    client: TestClient, db_url: str, settings: Settings, path: str
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    headers = bearer_headers(settings, admin_id, lifetime=timedelta(seconds=-1))
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]


@BOTH
def test_garbage_bearer_is_401(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]


# Both headers: the API key decides, never silently replaced by the token


def test_valid_key_with_non_admin_bearer_is_200_because_the_key_decides(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    user_id = insert_user(db_url, "plain@example.com")
    headers = {**_key(db_url, "users:export"), **bearer_headers(settings, user_id)}
    assert client.get(EXPORT, headers=headers).status_code == 200


@BOTH
def test_unusable_key_with_admin_bearer_is_401_because_the_key_decides(
    client: TestClient, db_url: str, settings: Settings, path: str
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    headers = {"X-API-Key": _revoked_key(db_url), **bearer_headers(settings, admin_id)}
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid, expired or revoked API key"}


def test_export_scope_key_with_admin_bearer_is_403_on_export_full_because_the_key_decides(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    headers = {**_key(db_url, "users:export"), **bearer_headers(settings, admin_id)}
    response = client.get(EXPORT_FULL, headers=headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "API key lacks the 'users:export_full' scope"}
