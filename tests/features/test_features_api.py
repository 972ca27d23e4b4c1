"""The admins' flag API: list, override, reset, the change history, and who may use it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from reviewpoint.features.catalog import FEATURES
from reviewpoint.main import create_app
from tests.data import admin_headers, bearer_headers, create_api_key, insert_user
from tests.features.overrides import ALIVE, CHANGES_API, FEATURES_API, SIMPLE, recorded_changes

FLAG_FIELDS = {"name", "enabled", "source", "default", "changed_by", "changed_at"}
CHANGE_FIELDS = {
    "id",
    "name",
    "action",
    "old_enabled",
    "new_enabled",
    "changed_by_id",
    "changed_by",
    "changed_at",
}
ADMIN_EMAIL = "admin@example.com"


@pytest.fixture
def admin(client: TestClient, db_url: str) -> dict[str, str]:
    return admin_headers(client, db_url, ADMIN_EMAIL)


@pytest.fixture
def alive_off_by_environment(settings: Settings) -> Iterator[TestClient]:
    """An app whose environment switches `users:export_alive` off."""
    off = settings.model_copy(update={"feature_users_export_alive": False})
    with TestClient(create_app(off)) as client:
        yield client


def _flags(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, object]]:
    response = client.get(FEATURES_API, headers=headers)
    assert response.status_code == 200, response.text
    return {flag["name"]: flag for flag in response.json()}


def _at(value: object) -> datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    return datetime.fromisoformat(value)


# GET /api/v1/features


def test_list_shows_every_flag_on_by_default_in_catalogue_order(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.get(FEATURES_API, headers=admin)
    assert response.status_code == 200
    assert [flag["name"] for flag in response.json()] == list(FEATURES)
    for flag in response.json():
        assert set(flag) == FLAG_FIELDS
        assert flag["enabled"] is True
        assert flag["source"] == "default"
        assert flag["default"] is True
        assert flag["changed_by"] is None
        assert flag["changed_at"] is None


def test_list_names_the_environment_when_a_variable_decides(
    alive_off_by_environment: TestClient, db_url: str
) -> None:
    headers = admin_headers(alive_off_by_environment, db_url)
    flags = _flags(alive_off_by_environment, headers)
    assert flags["users:export_alive"]["enabled"] is False
    assert flags["users:export_alive"]["source"] == "environment"
    assert flags["users:export_alive"]["default"] is False
    assert flags["users:export_simple"]["source"] == "default"


# PUT /api/v1/features/{name}


def test_switching_a_flag_off_answers_the_override_and_this_worker_serves_403_at_once(
    client: TestClient, admin: dict[str, str]
) -> None:
    before = datetime.now(UTC)
    response = client.put(
        f"{FEATURES_API}/users:export_alive", json={"enabled": False}, headers=admin
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == FLAG_FIELDS
    assert body["name"] == "users:export_alive"
    assert body["enabled"] is False
    assert body["source"] == "override"
    assert body["default"] is True
    assert body["changed_by"] == ADMIN_EMAIL
    assert before <= _at(body["changed_at"]) <= datetime.now(UTC)
    blocked = client.get(ALIVE)
    assert blocked.status_code == 403
    assert blocked.json() == {"detail": "Feature 'users:export_alive' is disabled"}
    assert client.get(SIMPLE).status_code == 200
    assert _flags(client, admin)["users:export_alive"] == body


def test_an_override_switches_on_what_the_environment_switched_off(
    alive_off_by_environment: TestClient, db_url: str
) -> None:
    headers = admin_headers(alive_off_by_environment, db_url)
    assert alive_off_by_environment.get(ALIVE).status_code == 403
    response = alive_off_by_environment.put(
        f"{FEATURES_API}/users:export_alive", json={"enabled": True}, headers=headers
    )
    assert response.status_code == 200
    assert response.json()["source"] == "override"
    assert response.json()["default"] is False
    assert alive_off_by_environment.get(ALIVE).status_code == 200


def test_an_override_beats_a_credential_check_as_the_environment_did(
    client: TestClient, admin: dict[str, str], db_url: str
) -> None:
    secret = create_api_key(db_url, ["users:export_full"])[1]
    client.put(f"{FEATURES_API}/users:export_full", json={"enabled": False}, headers=admin)
    response = client.get("/api/v1/users/export-full", headers={"X-API-Key": secret})
    assert response.status_code == 403
    assert response.json() == {"detail": "Feature 'users:export_full' is disabled"}
    assert client.get("/api/v1/users/export", headers={"X-API-Key": secret}).status_code == 200


def test_setting_the_value_an_override_already_has_records_nothing(
    client: TestClient, admin: dict[str, str], db_url: str
) -> None:
    first = client.put(f"{FEATURES_API}/users:export_alive", json={"enabled": False}, headers=admin)
    again = client.put(f"{FEATURES_API}/users:export_alive", json={"enabled": False}, headers=admin)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert len(recorded_changes(db_url)) == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"enabled": "maybe"}, {"enabled": None}, {"enabled": True, "scope": "all"}],
    ids=["missing", "not-a-boolean", "null", "unknown-field"],
)
def test_an_invalid_body_is_422_and_changes_nothing(
    client: TestClient, admin: dict[str, str], db_url: str, body: dict[str, object]
) -> None:
    response = client.put(f"{FEATURES_API}/users:export_alive", json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"
    assert recorded_changes(db_url) == []
    assert client.get(ALIVE).status_code == 200


# DELETE /api/v1/features/{name}


def test_reset_returns_to_the_environment_default_on_this_worker_at_once(
    alive_off_by_environment: TestClient, db_url: str
) -> None:
    headers = admin_headers(alive_off_by_environment, db_url)
    path = f"{FEATURES_API}/users:export_alive"
    alive_off_by_environment.put(path, json={"enabled": True}, headers=headers)
    response = alive_off_by_environment.delete(path, headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "name": "users:export_alive",
        "enabled": False,
        "source": "environment",
        "default": False,
        "changed_by": None,
        "changed_at": None,
    }
    assert alive_off_by_environment.get(ALIVE).status_code == 403


def test_reset_without_an_override_changes_and_records_nothing(
    client: TestClient, admin: dict[str, str], db_url: str
) -> None:
    response = client.delete(f"{FEATURES_API}/users:export_simple", headers=admin)
    assert response.status_code == 200
    assert response.json()["source"] == "default"
    assert response.json()["enabled"] is True
    assert recorded_changes(db_url) == []


# Unknown names


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize("name", ["users:import", "users", "USERS:EXPORT"])
def test_an_unknown_flag_is_404_listing_the_known_ones(
    client: TestClient, admin: dict[str, str], db_url: str, method: str, name: str
) -> None:
    body = {"enabled": False} if method == "PUT" else None
    response = client.request(method, f"{FEATURES_API}/{name}", json=body, headers=admin)
    assert response.status_code == 404
    assert response.json() == {
        "detail": f"Unknown feature '{name}'; known: users:export, users:export_full, "
        "users:export_alive, users:export_simple, users:export_anonymized, console"
    }
    assert recorded_changes(db_url) == []


# The change history


def test_every_change_is_recorded_with_who_when_and_the_values_before_and_after(
    client: TestClient, admin: dict[str, str], db_url: str
) -> None:
    admin_id = client.get("/api/v1/auth/me", headers=admin).json()["id"]
    path = f"{FEATURES_API}/users:export_alive"
    before = datetime.now(UTC)
    client.put(path, json={"enabled": False}, headers=admin)
    client.put(path, json={"enabled": True}, headers=admin)
    client.delete(path, headers=admin)
    response = client.get(CHANGES_API, headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    moves = [
        (change["action"], change["old_enabled"], change["new_enabled"]) for change in body["data"]
    ]
    # Newest first; values are effective ones: the reset went back to the default, on.
    assert moves == [("reset", True, True), ("enable", False, True), ("disable", True, False)]
    for change in body["data"]:
        assert set(change) == CHANGE_FIELDS
        assert change["name"] == "users:export_alive"
        assert change["changed_by_id"] == admin_id
        assert change["changed_by"] == ADMIN_EMAIL
        assert before <= _at(change["changed_at"]) <= datetime.now(UTC)
    times = [_at(change["changed_at"]) for change in body["data"]]
    assert times == sorted(times, reverse=True)


def test_change_history_pages_like_the_user_list(client: TestClient, admin: dict[str, str]) -> None:
    for enabled in (False, True, False, True, False):
        client.put(f"{FEATURES_API}/users:export", json={"enabled": enabled}, headers=admin)
    everything = client.get(CHANGES_API, headers=admin).json()["data"]
    page = client.get(CHANGES_API, params={"offset": 1, "limit": 2}, headers=admin)
    assert page.status_code == 200
    assert page.json() == {"data": everything[1:3], "count": 5}
    beyond = client.get(CHANGES_API, params={"offset": 5}, headers=admin).json()
    assert beyond == {"data": [], "count": 5}


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}], ids=["limit-0", "limit-1001", "neg"]
)
def test_change_history_refuses_pages_out_of_range(
    client: TestClient, admin: dict[str, str], params: dict[str, int]
) -> None:
    response = client.get(CHANGES_API, params=params, headers=admin)
    assert response.status_code == 422


# Admins only

ROUTES = [
    ("GET", FEATURES_API),
    ("GET", CHANGES_API),
    ("PUT", f"{FEATURES_API}/users:export_alive"),
    ("DELETE", f"{FEATURES_API}/users:export_alive"),
]
EVERY_ROUTE = pytest.mark.parametrize(
    ("method", "path"), ROUTES, ids=[f"{method}-{path}" for method, path in ROUTES]
)


@EVERY_ROUTE
def test_without_a_token_the_flag_api_is_401(
    client: TestClient, db_url: str, method: str, path: str
) -> None:
    response = client.request(method, path, json={"enabled": False})
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert recorded_changes(db_url) == []
    assert client.get(ALIVE).status_code == 200


@EVERY_ROUTE
def test_a_user_who_is_not_an_admin_gets_403_and_changes_nothing(
    client: TestClient, settings: Settings, db_url: str, method: str, path: str
) -> None:
    user_id = insert_user(db_url, "plain@example.com")
    headers = bearer_headers(settings, user_id)
    response = client.request(method, path, json={"enabled": False}, headers=headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "Administrator privileges required"}
    assert recorded_changes(db_url) == []
    assert client.get(ALIVE).status_code == 200


def test_an_unknown_flag_is_401_not_404_without_a_token(client: TestClient) -> None:
    response = client.put(f"{FEATURES_API}/users:import", json={"enabled": False})
    assert response.status_code == 401


def test_openapi_documents_the_flag_routes_and_their_errors(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    documented = {
        (method.upper(), path): set(operation["responses"])
        for path, operations in paths.items()
        if path.startswith(FEATURES_API)
        for method, operation in operations.items()
    }
    # 503: each reads the database; 413: PUT takes a body; 422: a NUL (reviewpoint/openapi.py).
    assert documented == {
        ("GET", FEATURES_API): {"200", "401", "403", "422", "503"},
        ("GET", CHANGES_API): {"200", "401", "403", "422", "503"},
        ("PUT", f"{FEATURES_API}/{{name}}"): {
            "200",
            "401",
            "403",
            "404",
            "409",
            "413",
            "422",
            "503",
        },
        ("DELETE", f"{FEATURES_API}/{{name}}"): {"200", "401", "403", "404", "422", "503"},
    }
