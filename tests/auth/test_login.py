"""Logging in with email and password, and what the token is then good for."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings, load_settings
from reviewpoint.db import standalone_session
from reviewpoint.main import create_app
from reviewpoint.users.models import User
from tests.data import BULK_PASSWORD, bearer_headers, insert_user, login
from tests.data import USER_PUBLIC_FIELDS as PUBLIC_FIELDS

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"


def _secret(settings: Settings) -> str:
    return settings.jwt_secret_key.get_secret_value()


def _login_times(db_url: str, user_id: int) -> tuple[datetime | None, datetime]:
    """The user's `last_login_at` and `updated_at`."""

    async def run() -> tuple[datetime | None, datetime]:
        async with standalone_session(db_url) as session:
            user = await session.get(User, user_id)
            assert user is not None
            return user.last_login_at, user.updated_at

    return asyncio.run(run())


def _last_login_at(db_url: str, user_id: int) -> datetime | None:
    return _login_times(db_url, user_id)[0]


def _form(email: str, password: str = BULK_PASSWORD) -> dict[str, str]:
    return {"username": email, "password": password}


# POST /api/v1/auth/login


def test_login_returns_a_bearer_access_token(client: TestClient, db_url: str) -> None:
    insert_user(db_url, "user@example.com")
    response = client.post(LOGIN, data=_form("user@example.com"))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type"}
    assert body["token_type"] == "bearer"
    assert body["access_token"]


def test_login_token_is_an_hs256_jwt_naming_the_user_with_the_configured_lifetime(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    user_id = insert_user(db_url, "user@example.com")
    token = client.post(LOGIN, data=_form("user@example.com")).json()["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, _secret(settings), algorithms=["HS256"])
    assert claims["sub"] == str(user_id)
    assert claims["exp"] - claims["iat"] == settings.access_token_expire_minutes * 60
    assert claims["exp"] > time.time()


def test_login_token_lifetime_follows_access_token_expire_minutes(db_url: str) -> None:
    settings = load_settings(
        _env_file=None,
        env="test",
        db_url=db_url,
        log_level="warning",
        access_token_expire_minutes=7,
        jwt_secret_key="login-lifetime-test-" + "k" * 12,
    )
    insert_user(db_url, "user@example.com")
    with TestClient(create_app(settings)) as client:
        token = client.post(LOGIN, data=_form("user@example.com")).json()["access_token"]
    claims = jwt.decode(token, _secret(settings), algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 7 * 60


def test_login_compares_the_email_case_insensitively(client: TestClient, db_url: str) -> None:
    user_id = insert_user(db_url, "Mixed.Case@example.com")
    headers = login(client, "mixed.case@EXAMPLE.COM", BULK_PASSWORD)
    assert client.get(ME, headers=headers).json()["id"] == user_id


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("user@example.com", "wrong-password-1"),
        ("nobody@example.com", BULK_PASSWORD),
        ("inactive@example.com", BULK_PASSWORD),
        ("deleted@example.com", BULK_PASSWORD),
    ],
    ids=["wrong-password", "unknown-email", "inactive-user", "deleted-user"],
)
def test_login_refusal_is_401_with_www_authenticate_and_the_same_json_detail(
    client: TestClient, db_url: str, email: str, password: str
) -> None:
    insert_user(db_url, "user@example.com")
    insert_user(db_url, "inactive@example.com", is_active=False)
    insert_user(db_url, "deleted@example.com", is_deleted=True, is_active=False)
    response = client.post(LOGIN, data=_form(email, password))
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert response.headers["content-type"] == "application/json"
    # One message for every refusal, so a caller cannot tell which emails exist.
    assert response.json() == {"detail": "Incorrect email or password"}


@pytest.mark.parametrize(
    ("form", "missing"),
    [
        ({"password": BULK_PASSWORD}, {"username"}),
        ({"username": "user@example.com"}, {"password"}),
        ({}, {"username", "password"}),
    ],
    ids=["no-username", "no-password", "empty-form"],
)
def test_login_with_missing_form_fields_is_422_naming_them(
    client: TestClient, form: dict[str, str], missing: set[str]
) -> None:
    response = client.post(LOGIN, data=form)
    assert response.status_code == 422
    assert {str(error["loc"][-1]) for error in response.json()["detail"]} == missing


@pytest.mark.parametrize("field", ["username", "password"])
def test_login_with_nul_in_a_field_is_422_naming_it(
    client: TestClient, db_url: str, field: str
) -> None:
    insert_user(db_url, "user@example.com")
    form = {"username": "user@example.com", "password": BULK_PASSWORD}
    form[field] = form[field][:4] + "\x00" + form[field][4:]
    response = client.post(LOGIN, data=form)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error == {
        "loc": ["body", field],
        "msg": "Value error, must not contain NUL characters",
        "type": "value_error",
    }


def test_login_sets_last_login_at(client: TestClient, db_url: str) -> None:
    user_id = insert_user(db_url, "user@example.com")
    assert _last_login_at(db_url, user_id) is None
    before = datetime.now(UTC)
    login(client, "user@example.com", BULK_PASSWORD)
    after = datetime.now(UTC)
    last_login_at = _last_login_at(db_url, user_id)
    assert last_login_at is not None
    assert before <= last_login_at <= after


def test_login_is_not_a_change_to_the_account(client: TestClient, db_url: str) -> None:
    user_id = insert_user(db_url, "user@example.com")
    _, updated_before = _login_times(db_url, user_id)
    login(client, "user@example.com", BULK_PASSWORD)
    last_login_at, updated_after = _login_times(db_url, user_id)
    assert last_login_at is not None
    assert updated_after == updated_before


def test_failed_login_leaves_last_login_at_unset(client: TestClient, db_url: str) -> None:
    user_id = insert_user(db_url, "user@example.com")
    response = client.post(LOGIN, data=_form("user@example.com", "wrong-password-1"))
    assert response.status_code == 401
    assert _last_login_at(db_url, user_id) is None


# GET /api/v1/auth/me


def test_me_with_a_login_token_returns_the_caller_without_password_or_hash(
    client: TestClient, db_url: str
) -> None:
    user_id = insert_user(db_url, "user@example.com", name="Plain User")
    response = client.get(ME, headers=login(client, "user@example.com", BULK_PASSWORD))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert body["id"] == user_id
    assert body["email"] == "user@example.com"
    assert body["name"] == "Plain User"
    assert body["is_admin"] is False
    assert body["last_login_at"] is not None
    assert BULK_PASSWORD not in response.text
    assert "argon2" not in response.text


def test_me_without_a_token_is_401_with_www_authenticate(client: TestClient) -> None:
    response = client.get(ME)
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert isinstance(response.json()["detail"], str)


def test_me_with_an_expired_token_is_401(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    user_id = insert_user(db_url, "user@example.com")
    issued = datetime.now(UTC) - timedelta(hours=1)
    claims = {"sub": str(user_id), "iat": issued, "exp": issued + timedelta(minutes=30)}
    token = jwt.encode(claims, _secret(settings), algorithm="HS256")
    response = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert isinstance(response.json()["detail"], str)


def test_me_with_a_token_expired_by_the_apps_own_minting_is_401(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    user_id = insert_user(db_url, "user@example.com")
    headers = bearer_headers(settings, user_id, lifetime=timedelta(seconds=-1))
    assert client.get(ME, headers=headers).status_code == 401


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    swapped = "A" if signature[10] != "A" else "B"
    return ".".join([header, payload, signature[:10] + swapped + signature[11:]])


def _garbage_tokens(user_id: int, secret: str) -> dict[str, str]:
    exp = datetime.now(UTC) + timedelta(minutes=5)
    return {
        "not-a-jwt": "garbage",
        "other-secret": jwt.encode(
            {"sub": str(user_id), "exp": exp}, "another-secret-of-32-characters!", algorithm="HS256"
        ),
        "alg-none": jwt.encode({"sub": str(user_id), "exp": exp}, None, algorithm="none"),
        "no-exp": jwt.encode({"sub": str(user_id)}, secret, algorithm="HS256"),
        "no-sub": jwt.encode({"exp": exp}, secret, algorithm="HS256"),
        "non-numeric-sub": jwt.encode({"sub": "admin", "exp": exp}, secret, algorithm="HS256"),
        "unknown-user": jwt.encode({"sub": str(user_id + 1000), "exp": exp}, secret, "HS256"),
        "tampered": _tampered(jwt.encode({"sub": str(user_id), "exp": exp}, secret, "HS256")),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "not-a-jwt",
        "other-secret",
        "alg-none",
        "no-exp",
        "no-sub",
        "non-numeric-sub",
        "unknown-user",
        "tampered",
    ],
)
def test_me_with_an_invalid_token_is_401(
    client: TestClient, db_url: str, settings: Settings, kind: str
) -> None:
    user_id = insert_user(db_url, "user@example.com")
    token = _garbage_tokens(user_id, _secret(settings))[kind]
    response = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "state",
    [{"is_active": False}, {"is_deleted": True, "is_active": False}],
    ids=["deactivated", "deleted"],
)
def test_me_with_a_token_of_a_user_since_deactivated_or_deleted_is_401(
    client: TestClient, db_url: str, settings: Settings, state: dict[str, bool]
) -> None:
    user_id = insert_user(db_url, "user@example.com", **state)
    assert client.get(ME, headers=bearer_headers(settings, user_id)).status_code == 401
