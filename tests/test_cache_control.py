"""Nothing under /api/ may be kept by a cache: tokens, key secrets, user data, exports."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from tests.conftest import LiveServer
from tests.data import bearer_headers, create_api_key, create_user, insert_user, insert_users

LOGIN = "/api/v1/auth/login"
USERS = "/api/v1/users"
EXPORT_FULL = "/api/v1/users/export-full"


@pytest.fixture
def admin(settings: Settings, db_url: str) -> dict[str, str]:
    return bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))


def test_a_token_response_is_no_store_and_no_cache(client: TestClient, db_url: str):
    create_user(db_url, "ops@example.com", password="ops-password-1", is_admin=True)
    response = client.post(
        LOGIN, data={"username": "ops@example.com", "password": "ops-password-1"}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def test_a_failed_login_is_no_store_and_no_cache(client: TestClient):
    response = client.post(LOGIN, data={"username": "who@example.com", "password": "wrong-pass"})
    assert response.status_code == 401
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def test_a_users_list_is_no_store(client: TestClient, admin: dict[str, str]):
    response = client.get(USERS, headers=admin)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "pragma" not in response.headers  # only token responses need the HTTP/1.0 header


def test_a_401_is_no_store(client: TestClient):
    response = client.get(USERS)
    assert response.status_code == 401
    assert response.headers["cache-control"] == "no-store"


def test_a_422_from_the_nul_guard_is_no_store(client: TestClient):
    response = client.get(f"{USERS}?offset=%00")
    assert response.status_code == 422
    assert response.headers["cache-control"] == "no-store"


def test_a_streamed_export_is_no_store_and_complete(live_server: LiveServer, db_url: str):
    insert_users(db_url, [(f"user{i}@example.com", f"User {i}") for i in range(2500)])
    _, secret = create_api_key(db_url, ["users:export_full"])
    with (
        httpx.Client(base_url=live_server.url, timeout=30) as client,
        client.stream(
            "GET", "/api/v1/users/export-full", headers={"X-API-Key": secret}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert "content-length" not in response.headers  # still streamed, not buffered
        text = response.read().decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + 2500
    assert rows[-1][1] == "user2499@example.com"
