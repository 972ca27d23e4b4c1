"""OPTIONS and 405 name every method of the path, not only those of the first route matched."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.data import admin_headers

PATHS = [
    ("/api/v1/users", "GET, POST, OPTIONS"),
    ("/api/v1/users/7", "DELETE, GET, PATCH, OPTIONS"),
    ("/api/v1/api-keys", "GET, POST, OPTIONS"),
    ("/api/v1/api-keys/7", "DELETE, OPTIONS"),
    ("/api/v1/features/users:export", "DELETE, PUT, OPTIONS"),
    ("/api/v1/users/export", "GET, OPTIONS"),
    # A fixed path beside /api/v1/features/{name}: its own methods only.
    ("/api/v1/features/changes", "GET, OPTIONS"),
]


@pytest.mark.parametrize(("path", "allow"), PATHS)
def test_options_answers_every_method_of_the_path(
    client: TestClient, path: str, allow: str
) -> None:
    response = client.options(path)
    assert response.status_code == 204
    assert response.headers["allow"] == allow
    assert response.content == b""


@pytest.mark.parametrize(("path", "allow"), PATHS)
def test_unsupported_method_is_405_with_the_full_allow(
    client: TestClient, path: str, allow: str
) -> None:
    response = client.request("TRACE", path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"detail": "Method Not Allowed"}


def test_method_check_comes_before_credentials(client: TestClient) -> None:
    # No token: the method is wrong whoever asks, so 405 rather than 401.
    assert client.put("/api/v1/users").status_code == 405


def test_supported_methods_still_reach_their_routes(client: TestClient, db_url: str) -> None:
    headers = admin_headers(client, db_url)
    assert client.get("/api/v1/users", headers=headers).status_code == 200
    assert client.get("/api/v1/users/999999", headers=headers).status_code == 404


def test_unknown_path_stays_404(client: TestClient) -> None:
    assert client.options("/api/v1/nothing-here").status_code == 404
