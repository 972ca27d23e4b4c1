"""The flags page over HTTP: states and their sources, each change confirmed first,
served at once and listed, CSRF, and names or actions the console does not know."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from reviewpoint.main import create_app
from tests.console.test_console_http import _csrf, _settings_with, _sign_in
from tests.data import ADMIN_PASSWORD, bearer_headers, create_user

FLAGS = "/console/flags"
EXPORT_FULL = "/api/v1/users/export-full"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def admin(db_url: str) -> int:
    return create_user(db_url, "admin@example.com", password=ADMIN_PASSWORD, is_admin=True)


@pytest.fixture
def signed_in(client: TestClient, admin: int) -> TestClient:
    assert _sign_in(client).status_code == 303
    return client


def _row(page: httpx.Response, name: str) -> str:
    found = re.search(rf'<tr id="flag-{name.replace(":", "-")}">(.*?)</tr>', page.text, re.S)
    assert found is not None, page.text
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def _change(client: TestClient, name: str, action: str) -> httpx.Response:
    """What the confirmation page's button sends."""
    confirm = client.get(f"{FLAGS}/{name}/{action}")
    assert confirm.status_code == 200, confirm.text
    assert f'action="{FLAGS}/{name}/{action}"' in confirm.text
    return client.post(
        f"{FLAGS}/{name}/{action}", data={"csrf_token": _csrf(confirm)}, follow_redirects=False
    )


def test_turning_a_flag_off_is_served_at_once_and_listed_and_on_again_reopens(
    signed_in: TestClient, settings: Settings, admin: int
) -> None:
    token = bearer_headers(settings, admin)
    assert signed_in.get(EXPORT_FULL, headers=token).status_code == 200

    response = _change(signed_in, "users:export_full", "disable")
    assert response.status_code == 303
    assert response.headers["location"] == FLAGS
    assert signed_in.get(EXPORT_FULL, headers=token).status_code == 403
    page = signed_in.get(FLAGS)
    assert _row(page, "users:export_full").startswith("users:export_full off override by")
    changes = page.text[page.text.index('id="flag-changes"') :]
    assert "disable: on → off" in changes
    assert "admin@example.com" in changes

    assert _change(signed_in, "users:export_full", "enable").status_code == 303
    assert signed_in.get(EXPORT_FULL, headers=token).status_code == 200
    api = signed_in.get("/api/v1/features/changes", headers=token).json()
    assert [(c["action"], c["changed_by"]) for c in api["data"]] == [
        ("enable", "admin@example.com"),
        ("disable", "admin@example.com"),
    ]


def test_reset_drops_the_override_and_the_default_applies_again(
    signed_in: TestClient, settings: Settings, admin: int
) -> None:
    _change(signed_in, "users:export", "disable")
    assert "Reset" in _row(signed_in.get(FLAGS), "users:export")
    assert _change(signed_in, "users:export", "reset").status_code == 303
    row = _row(signed_in.get(FLAGS), "users:export")
    assert row == "users:export on default (nothing set) on Turn off users:export"
    features = signed_in.get("/api/v1/features", headers=bearer_headers(settings, admin)).json()
    assert {f["name"]: f["source"] for f in features}["users:export"] == "default"


@SQLITE_ONLY
def test_each_flag_says_where_its_state_comes_from(db_url: str, admin: int) -> None:
    app = create_app(_settings_with(db_url, feature_users_export_alive=False))
    with TestClient(app) as client:
        assert _sign_in(client).status_code == 303
        _change(client, "users:export_simple", "disable")
        page = client.get(FLAGS)
    assert _row(page, "users:export_alive") == (
        "users:export_alive off environment (REVIEWPOINT_FEATURE… settings) off "
        "Turn on users:export_alive"
    )
    assert re.fullmatch(
        r"users:export_simple off override by admin@example\.com, \d{4}-\d\d-\d\d \d\d:\d\d UTC "
        r"on Turn on users:export_simple · Reset users:export_simple",
        _row(page, "users:export_simple"),
    )
    assert _row(page, "console") == "console on default (nothing set) on Turn off console"


@SQLITE_ONLY
def test_turning_the_console_off_warns_that_it_closes_the_console(signed_in: TestClient) -> None:
    page = signed_in.get(f"{FLAGS}/console/disable")
    assert "This closes the console, this page included" in page.text
    assert "closes the console" not in signed_in.get(f"{FLAGS}/users:export/disable").text


@pytest.mark.parametrize("token", [None, "forged"])
def test_a_change_without_the_forms_token_changes_nothing(
    signed_in: TestClient, settings: Settings, admin: int, token: str | None
) -> None:
    data = {} if token is None else {"csrf_token": token}
    response = signed_in.post(f"{FLAGS}/users:export_full/disable", data=data)
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    api = signed_in.get("/api/v1/features/changes", headers=bearer_headers(settings, admin))
    assert api.json()["count"] == 0


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("users:nothing/disable", "No feature flag is named &#39;users:nothing&#39;."),
        ("users:export/explode", "&#39;explode&#39; is not something a flag can do"),
    ],
)
def test_an_unknown_flag_or_action_is_said_in_place(
    signed_in: TestClient, path: str, message: str
) -> None:
    confirm = signed_in.get(f"{FLAGS}/{path}")
    assert confirm.status_code == 404
    assert message in confirm.text
    posted = signed_in.post(f"{FLAGS}/{path}", data={"csrf_token": _csrf(confirm)})
    assert posted.status_code == 404
    assert message in posted.text
    assert 'role="alert"' in posted.text
