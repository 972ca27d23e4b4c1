"""Bad input is a 422 naming what failed, never a 5xx, and never echoed back.

Each case here was a 500 or 503 on PostgreSQL (NUL, integers past 32 bits), an
undocumented 400 (JSON that cannot be decoded), or a 422 quoting the submitted
password.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from reviewpoint import security
from reviewpoint.config import Settings
from tests.data import bearer_headers, create_api_key, execute_sql, insert_user

USERS = "/api/v1/users"
API_KEYS = "/api/v1/api-keys"
EXPORT = "/api/v1/users/export"
TOO_BIG = ["2147483648", "99999999999999999999"]


@pytest.fixture
def admin(settings: Settings, db_url: str) -> dict[str, str]:
    return bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))


@pytest.fixture
def export_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export"])[1]}


def _locs(response: Any) -> list[list[object]]:
    """The `loc` of every error in a 422, after checking the body's shape."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    for error in detail:
        assert set(error) == {"loc", "msg", "type"}
    return [error["loc"] for error in detail]


# NUL in the URL: path and every query parameter


@pytest.mark.parametrize("param", ["email", "format"])
def test_nul_in_an_export_query_parameter_is_422_naming_it(
    client: TestClient, export_key: dict[str, str], param: str
):
    response = client.get(f"{EXPORT}?{param}=a%00b", headers=export_key)
    assert _locs(response) == [["query", param]]


def test_nul_in_a_query_parameter_is_422_before_credentials(client: TestClient):
    response = client.get(f"{USERS}?offset=0&limit=%00")
    assert _locs(response) == [["query", "limit"]]


def test_nul_in_the_path_is_422(client: TestClient, admin: dict[str, str]):
    response = client.get(f"{USERS}/1%00", headers=admin)
    assert _locs(response) == [["path"]]


# NUL in JSON string fields


@pytest.mark.parametrize("field", ["email", "name", "password"])
def test_nul_in_a_new_users_field_is_422_naming_it(
    client: TestClient, admin: dict[str, str], field: str
):
    user = {"email": "new@example.com", "password": "new-password-1", "name": "New"}
    user[field] = "a\x00" + user[field]
    response = client.post(USERS, json=user, headers=admin)
    assert _locs(response) == [["body", field]]


@pytest.mark.parametrize("field", ["email", "name", "password"])
def test_nul_in_a_user_update_is_422_naming_the_field(
    client: TestClient, db_url: str, admin: dict[str, str], field: str
):
    user_id = insert_user(db_url, "old@example.com")
    response = client.patch(f"{USERS}/{user_id}", json={field: "x\x00-long-enough"}, headers=admin)
    assert _locs(response) == [["body", field]]


def test_nul_in_an_api_key_name_is_422_naming_it(client: TestClient, admin: dict[str, str]):
    body = {"name": "nightly\x00", "scopes": ["users:export"]}
    response = client.post(API_KEYS, json=body, headers=admin)
    assert _locs(response) == [["body", "name"]]


# Integers past the database's 32-bit range


@pytest.mark.parametrize("value", TOO_BIG)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_user_id_past_32_bits_is_422_naming_it(
    client: TestClient, admin: dict[str, str], method: str, value: str
):
    body = {"name": "x"} if method == "PATCH" else None
    response = client.request(method, f"{USERS}/{value}", json=body, headers=admin)
    assert _locs(response) == [["path", "user_id"]]


def test_user_id_zero_is_422(client: TestClient, admin: dict[str, str]):
    assert _locs(client.get(f"{USERS}/0", headers=admin)) == [["path", "user_id"]]


def test_largest_user_id_is_an_ordinary_404(client: TestClient, admin: dict[str, str]):
    response = client.get(f"{USERS}/2147483647", headers=admin)
    assert response.status_code == 404
    assert response.json() == {"detail": "User not found"}


@pytest.mark.parametrize("value", TOO_BIG)
def test_api_key_id_past_32_bits_is_422_naming_it(
    client: TestClient, admin: dict[str, str], value: str
):
    response = client.delete(f"{API_KEYS}/{value}", headers=admin)
    assert _locs(response) == [["path", "key_id"]]


@pytest.mark.parametrize("value", [*TOO_BIG, "1e20", "-1"])
def test_offset_outside_0_to_int32_max_is_422_naming_it(
    client: TestClient, admin: dict[str, str], value: str
):
    response = client.get(f"{USERS}?offset={value}", headers=admin)
    assert _locs(response) == [["query", "offset"]]


def test_largest_offset_is_an_empty_page(client: TestClient, admin: dict[str, str]):
    response = client.get(f"{USERS}?offset=2147483647", headers=admin)
    assert response.status_code == 200
    assert response.json() == {"data": [], "count": 1}


# Bodies that are not JSON at all


UNDECODABLE = {
    "syntax error": b'{"name": ',
    "invalid UTF-8": b'{"name": "\xc3\x28"}',
    "nested past the parser's recursion limit": b"[" * 100_000,
}


@pytest.mark.parametrize("body", UNDECODABLE.values(), ids=UNDECODABLE.keys())
@pytest.mark.parametrize(
    "method, path", [("POST", USERS), ("PATCH", f"{USERS}/1"), ("POST", API_KEYS)]
)
def test_a_body_that_is_not_json_is_422_naming_the_body(
    client: TestClient, admin: dict[str, str], method: str, path: str, body: bytes
):
    headers = {**admin, "Content-Type": "application/json"}
    response = client.request(method, path, content=body, headers=headers)
    locs = _locs(response)
    assert [loc[0] for loc in locs] == ["body"]
    assert response.json()["detail"][0]["type"] == "json_invalid"


# Validation errors never echo what was sent


def test_422_on_a_new_user_does_not_echo_the_password(client: TestClient, admin: dict[str, str]):
    password = "Sh0rt!"
    body = {"email": "not-an-email", "password": password, "name": "x" * 200}
    response = client.post(USERS, json=body, headers=admin)
    assert sorted(loc[-1] for loc in _locs(response)) == ["email", "name", "password"]
    assert password not in response.text
    assert "not-an-email" not in response.text


def test_422_on_login_does_not_echo_the_password(client: TestClient):
    # Today only grant_type fails here; the body must carry no submitted value at all,
    # so a password that fails its own check later is not echoed either.
    password = "the-login-password-42"
    form = {"password": password, "grant_type": "not-password"}
    response = client.post("/api/v1/auth/login", data=form)
    assert sorted(loc[-1] for loc in _locs(response)) == ["grant_type", "username"]
    assert password not in response.text
    assert "not-password" not in response.text


# A malformed API key is a 401 that never reaches the database


MALFORMED_KEYS = {
    "non-hex id": "rvp_zzzzzzzzzzzz_" + "a" * 43,
    "upper-case id": "rvp_ABCDEF012345_" + "a" * 43,
    "short secret": "rvp_abcdef012345_abc",
    "huge": "rvp_abcdef012345_" + "a" * 6000,
    "no prefix": "abcdef012345_" + "a" * 43,
}


@pytest.mark.parametrize("secret", MALFORMED_KEYS.values(), ids=MALFORMED_KEYS.keys())
def test_a_malformed_api_key_is_401_without_a_database_query(
    client: TestClient, db_url: str, secret: str
):
    # With the table gone, any query for the key would fail (500/503), not 401.
    execute_sql(db_url, "ALTER TABLE api_keys RENAME TO api_keys_gone")
    response = client.get(EXPORT, headers={"X-API-Key": secret})
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid, expired or revoked API key"}


@pytest.mark.parametrize(
    "secret", ["rvp_abcdef012345\x00_" + "a" * 42, "rvp_abcdef01234\x00_" + "a" * 43]
)
def test_api_key_with_nul_is_not_shaped_like_ours(secret: str):
    assert security.api_key_prefix(secret) is None


def test_a_generated_api_key_is_shaped_like_ours():
    new = security.generate_api_key()
    assert security.api_key_prefix(new.secret) == new.prefix


def test_a_well_shaped_unknown_key_does_query_the_database(client: TestClient, db_url: str):
    """The control for the test above: its renamed table does break a real lookup."""
    execute_sql(db_url, "ALTER TABLE api_keys RENAME TO api_keys_gone")
    response = client.get(EXPORT, headers={"X-API-Key": security.generate_api_key().secret})
    assert response.status_code in (500, 503)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            API_KEYS,
            {"name": "k", "scopes": ["users:export"], "anonymized_only": 0},
            "anonymized_only",
        ),
        (
            API_KEYS,
            {"name": "k", "scopes": ["users:export"], "expires_in_days": "30"},
            "expires_in_days",
        ),
        (USERS, {"email": "a@example.com", "password": "long-enough-1", "is_admin": 1}, "is_admin"),
    ],
)
def test_body_of_another_json_type_is_422(
    client: TestClient, admin: dict[str, str], path: str, body: dict[str, object], field: str
) -> None:
    # Found by schema fuzzing: lax parsing took 0 for false and "30" for 30.
    assert _locs(client.post(path, json=body, headers=admin)) == [["body", field]]


def test_rotation_grace_of_another_json_type_is_422(
    client: TestClient, admin: dict[str, str], db_url: str
) -> None:
    key_id, _ = create_api_key(db_url, ["users:export"])
    response = client.post(
        f"{API_KEYS}/{key_id}/rotate", json={"grace_minutes": False}, headers=admin
    )
    assert _locs(response) == [["body", "grace_minutes"]]


def test_whole_number_written_as_a_float_is_an_integer(
    client: TestClient, admin: dict[str, str]
) -> None:
    # JSON Schema counts 2.0 as an integer, so the API does too; 2.5 is not one.
    body = {"name": "k", "scopes": ["users:export"], "expires_in_days": 2.0}
    assert client.post(API_KEYS, json=body, headers=admin).status_code == 201
    body["expires_in_days"] = 2.5
    assert _locs(client.post(API_KEYS, json=body, headers=admin)) == [["body", "expires_in_days"]]
