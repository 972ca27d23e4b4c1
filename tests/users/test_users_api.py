"""The administrators' user API: create, list, read, update, soft delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reviewpoint.db import standalone_session
from reviewpoint.users.models import User
from tests.data import USER_PUBLIC_FIELDS as PUBLIC_FIELDS
from tests.data import admin_headers, create_user, insert_users, login

USERS = "/api/v1/users"


@pytest.fixture
def admin(client: TestClient, db_url: str) -> dict[str, str]:
    return admin_headers(client, db_url)


def _new_user(**fields: object) -> dict[str, object]:
    return {"email": "new@example.com", "password": "new-password-1", **fields}


def _error_fields(response_json: dict[str, object]) -> set[str]:
    """The body fields a 422 names, e.g. {"email"} for loc ["body", "email"]."""
    detail = response_json["detail"]
    assert isinstance(detail, list)
    return {str(error["loc"][-1]) for error in detail}


def _id_of(db_url: str, email: str) -> int:
    async def run() -> int:
        async with standalone_session(db_url) as session:
            user_id = await session.scalar(select(User.id).where(User.email == email))
            assert user_id is not None
            return user_id

    return asyncio.run(run())


def _row(db_url: str, user_id: int) -> User | None:
    async def run() -> User | None:
        async with standalone_session(db_url) as session:
            return await session.get(User, user_id)

    return asyncio.run(run())


# POST /api/v1/users


def test_create_user_is_201_with_the_public_fields(client: TestClient, admin: dict[str, str]):
    response = client.post(USERS, json=_new_user(name="New User"), headers=admin)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert body["email"] == "new@example.com"
    assert body["name"] == "New User"
    assert body["is_active"] is True
    assert body["is_admin"] is False
    assert body["last_login_at"] is None


def test_create_user_response_leaks_no_password_or_hash(client: TestClient, admin: dict[str, str]):
    response = client.post(USERS, json=_new_user(), headers=admin)
    assert response.status_code == 201
    assert "hashed_password" not in response.json()
    assert "new-password-1" not in response.text
    assert "argon2" not in response.text


def test_create_user_persists_a_user_who_can_log_in(client: TestClient, admin: dict[str, str]):
    assert client.post(USERS, json=_new_user(), headers=admin).status_code == 201
    assert login(client, "new@example.com", "new-password-1")


def test_create_user_with_invalid_email_is_422_naming_email(
    client: TestClient, admin: dict[str, str]
):
    response = client.post(USERS, json=_new_user(email="not-an-email"), headers=admin)
    assert response.status_code == 422
    assert _error_fields(response.json()) == {"email"}


def test_create_user_with_short_password_is_422_naming_password(
    client: TestClient, admin: dict[str, str]
):
    response = client.post(USERS, json=_new_user(password="short"), headers=admin)
    assert response.status_code == 422
    assert _error_fields(response.json()) == {"password"}


def test_create_user_with_name_over_128_chars_is_422(client: TestClient, admin: dict[str, str]):
    response = client.post(USERS, json=_new_user(name="x" * 129), headers=admin)
    assert response.status_code == 422
    assert _error_fields(response.json()) == {"name"}


def test_create_user_with_name_of_exactly_128_chars_is_201(
    client: TestClient, admin: dict[str, str]
):
    response = client.post(USERS, json=_new_user(name="x" * 128), headers=admin)
    assert response.status_code == 201
    assert response.json()["name"] == "x" * 128


def test_create_user_with_nul_in_name_is_422(client: TestClient, admin: dict[str, str]):
    response = client.post(USERS, json=_new_user(name="bad\x00name"), headers=admin)
    assert response.status_code == 422
    assert _error_fields(response.json()) == {"name"}


def test_create_user_with_unknown_field_is_422(client: TestClient, admin: dict[str, str]):
    response = client.post(USERS, json=_new_user(is_deleted=True), headers=admin)
    assert response.status_code == 422
    assert _error_fields(response.json()) == {"is_deleted"}


def test_create_user_with_duplicate_email_is_409(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [("taken@example.com", None)])
    response = client.post(USERS, json=_new_user(email="taken@example.com"), headers=admin)
    assert response.status_code == 409


def test_create_user_with_duplicate_email_in_other_case_is_409(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [("taken@example.com", None)])
    response = client.post(USERS, json=_new_user(email="TAKEN@Example.COM"), headers=admin)
    assert response.status_code == 409


def test_create_user_as_non_admin_is_403(client: TestClient, db_url: str):
    create_user(db_url, "plain@example.com", password="plain-password-1")
    headers = login(client, "plain@example.com", "plain-password-1")
    response = client.post(USERS, json=_new_user(), headers=headers)
    assert response.status_code == 403


def test_create_user_without_token_is_401_with_www_authenticate(client: TestClient):
    response = client.post(USERS, json=_new_user())
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]


# GET /api/v1/users


def test_list_users_orders_by_id_and_counts_all_live_users(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    # Inserted in reverse alphabetical order, so ordering by email would differ.
    insert_users(db_url, [(f"{c}@example.com", None) for c in "edcba"])
    body = client.get(USERS, headers=admin).json()
    ids = [user["id"] for user in body["data"]]
    assert ids == sorted(ids)
    assert body["count"] == 6  # five users and the admin
    assert len(ids) == 6


def test_list_users_pages_with_offset_and_limit(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [(f"user{i}@example.com", None) for i in range(5)])
    everyone = [user["id"] for user in client.get(USERS, headers=admin).json()["data"]]
    page = client.get(USERS, params={"offset": 2, "limit": 3}, headers=admin).json()
    assert [user["id"] for user in page["data"]] == everyone[2:5]
    assert page["count"] == 6


def test_list_users_offset_past_the_end_is_an_empty_page_with_the_count(
    client: TestClient, admin: dict[str, str]
):
    page = client.get(USERS, params={"offset": 50}, headers=admin).json()
    assert page == {"data": [], "count": 1}


@pytest.mark.parametrize(
    "params", [{"limit": 1001}, {"limit": 0}, {"offset": -1}], ids=["limit1001", "limit0", "neg"]
)
def test_list_users_with_out_of_range_paging_is_422(
    client: TestClient, admin: dict[str, str], params: dict[str, int]
):
    response = client.get(USERS, params=params, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


def test_list_users_accepts_limit_1000(client: TestClient, admin: dict[str, str]):
    assert client.get(USERS, params={"limit": 1000}, headers=admin).status_code == 200


# GET / PATCH / DELETE /api/v1/users/{id}


def test_get_user_returns_that_user(client: TestClient, db_url: str, admin: dict[str, str]):
    insert_users(db_url, [("someone@example.com", "Some One")])
    user_id = _id_of(db_url, "someone@example.com")
    response = client.get(f"{USERS}/{user_id}", headers=admin)
    assert response.status_code == 200
    assert response.json()["email"] == "someone@example.com"
    assert response.json()["name"] == "Some One"


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_unknown_user_id_is_404(client: TestClient, admin: dict[str, str], method: str):
    kwargs = {"json": {"name": "x"}} if method == "PATCH" else {}
    response = client.request(method, f"{USERS}/999999", headers=admin, **kwargs)
    assert response.status_code == 404


def test_patch_user_email_to_a_taken_one_is_409(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [("first@example.com", None), ("second@example.com", None)])
    user_id = _id_of(db_url, "second@example.com")
    response = client.patch(
        f"{USERS}/{user_id}", json={"email": "First@Example.com"}, headers=admin
    )
    assert response.status_code == 409
    assert client.get(f"{USERS}/{user_id}", headers=admin).json()["email"] == "second@example.com"


def test_patch_user_email_to_its_own_in_other_case_is_allowed(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [("me@example.com", None)])
    user_id = _id_of(db_url, "me@example.com")
    response = client.patch(f"{USERS}/{user_id}", json={"email": "ME@example.com"}, headers=admin)
    assert response.status_code == 200
    assert response.json()["email"] == "ME@example.com"


def test_patch_user_changes_name_and_updated_at(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    insert_users(db_url, [("rename@example.com", "Old Name")], created_at=long_ago)
    user_id = _id_of(db_url, "rename@example.com")
    response = client.patch(f"{USERS}/{user_id}", json={"name": "New Name"}, headers=admin)
    assert response.status_code == 200
    assert response.json()["name"] == "New Name"
    assert datetime.fromisoformat(response.json()["updated_at"]) > long_ago
    stored = client.get(f"{USERS}/{user_id}", headers=admin).json()
    assert stored["name"] == "New Name"
    assert stored["updated_at"] == response.json()["updated_at"]
    assert datetime.fromisoformat(stored["created_at"]) == long_ago


def test_patch_user_with_null_name_clears_it(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [("named@example.com", "A Name")])
    user_id = _id_of(db_url, "named@example.com")
    response = client.patch(f"{USERS}/{user_id}", json={"name": None}, headers=admin)
    assert response.status_code == 200
    assert response.json()["name"] is None


def test_delete_user_is_204_with_no_body(client: TestClient, db_url: str, admin: dict[str, str]):
    insert_users(db_url, [("gone@example.com", None)])
    response = client.delete(f"{USERS}/{_id_of(db_url, 'gone@example.com')}", headers=admin)
    assert response.status_code == 204
    assert response.content == b""


def test_deleted_user_is_404_on_get(client: TestClient, db_url: str, admin: dict[str, str]):
    insert_users(db_url, [("gone@example.com", None)])
    user_id = _id_of(db_url, "gone@example.com")
    assert client.delete(f"{USERS}/{user_id}", headers=admin).status_code == 204
    assert client.get(f"{USERS}/{user_id}", headers=admin).status_code == 404


def test_deleted_user_is_left_out_of_the_list_and_count(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [("gone@example.com", None), ("stays@example.com", None)])
    gone = client.delete(f"{USERS}/{_id_of(db_url, 'gone@example.com')}", headers=admin)
    assert gone.status_code == 204
    body = client.get(USERS, headers=admin).json()
    assert [user["email"] for user in body["data"]] == ["admin@example.com", "stays@example.com"]
    assert body["count"] == 2


def test_delete_user_keeps_the_row_marked_deleted(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [("gone@example.com", None)])
    user_id = _id_of(db_url, "gone@example.com")
    assert client.delete(f"{USERS}/{user_id}", headers=admin).status_code == 204
    row = _row(db_url, user_id)
    assert row is not None
    assert row.is_deleted is True
    assert row.is_active is False


def test_deleted_user_can_no_longer_log_in(client: TestClient, db_url: str, admin: dict[str, str]):
    user_id = create_user(db_url, "leaver@example.com", password="leaver-password-1")
    assert client.delete(f"{USERS}/{user_id}", headers=admin).status_code == 204
    response = client.post(
        "/api/v1/auth/login",
        data={"username": "leaver@example.com", "password": "leaver-password-1"},
    )
    assert response.status_code == 401


def test_deleted_users_email_can_be_registered_again(
    client: TestClient, db_url: str, admin: dict[str, str]
):
    insert_users(db_url, [("reuse@example.com", None)])
    old_id = _id_of(db_url, "reuse@example.com")
    assert client.delete(f"{USERS}/{old_id}", headers=admin).status_code == 204
    response = client.post(USERS, json=_new_user(email="Reuse@example.com"), headers=admin)
    assert response.status_code == 201
    assert response.json()["id"] != old_id


def test_admin_deleting_own_account_is_409(client: TestClient, admin: dict[str, str]):
    own_id = client.get("/api/v1/auth/me", headers=admin).json()["id"]
    response = client.delete(f"{USERS}/{own_id}", headers=admin)
    assert response.status_code == 409
    assert client.get(f"{USERS}/{own_id}", headers=admin).status_code == 200
