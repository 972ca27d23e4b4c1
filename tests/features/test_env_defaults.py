"""Feature flags: on by default, switched by environment, checked before any credential.

Every test starts with no `REVIEWPOINT_*` setting of its own, so the developer's
shell cannot switch a feature the test did not mean to switch.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from reviewpoint.api_keys.models import ApiKey
from reviewpoint.config import Settings, load_settings
from reviewpoint.db import standalone_session
from reviewpoint.features.catalog import FEATURES
from reviewpoint.features.defaults import enabled_features, is_enabled
from reviewpoint.main import create_app
from tests.data import create_api_key, insert_users, revoke_api_key

EXPORT = "/api/v1/users/export"
EXPORT_FULL = "/api/v1/users/export-full"
EXPORT_ALIVE = "/api/v1/users/export-alive"
EXPORT_SIMPLE = "/api/v1/users/export-simple"
PATHS = {
    "users:export": EXPORT,
    "users:export_full": EXPORT_FULL,
    "users:export_alive": EXPORT_ALIVE,
    "users:export_simple": EXPORT_SIMPLE,
}
OPEN_PATHS = {"users:export_alive": EXPORT_ALIVE, "users:export_simple": EXPORT_SIMPLE}
CSV_PATHS = {"users:export": EXPORT, "users:export_full": EXPORT_FULL}
ALL = set(FEATURES)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REVIEWPOINT_") and name != "REVIEWPOINT_TEST_DB_URL":
            monkeypatch.delenv(name)


def _settings(db_url: str | None = None) -> Settings:
    """Settings as the app would read them from the (monkeypatched) environment."""
    if db_url is None:
        return load_settings(_env_file=None, env="test")
    return load_settings(_env_file=None, env="test", db_url=db_url, log_level="warning")


@contextmanager
def _client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(db_url))) as client:
        yield client


def _set(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def _on(settings: Settings) -> set[str]:
    return {name for name, enabled in enabled_features(settings).items() if enabled}


def _last_used_at(db_url: str, key_id: int) -> object:
    async def run() -> object:
        async with standalone_session(db_url) as session:
            key = await session.get(ApiKey, key_id)
            assert key is not None
            return key.last_used_at

    return asyncio.run(run())


# How the settings combine (README "Feature flags", features/defaults.py)


PRECEDENCE: dict[str, tuple[dict[str, str], set[str]]] = {
    "default-all-on": ({}, ALL),
    "allow-list": (
        {"REVIEWPOINT_FEATURES": "users:export,users:export_alive"},
        {"users:export", "users:export_alive"},
    ),
    "allow-list-with-spaces": (
        {"REVIEWPOINT_FEATURES": " users:export_full , users:export_simple ,"},
        {"users:export_full", "users:export_simple"},
    ),
    # Set but empty is still an allow-list: it names nothing (README, rule 4).
    "empty-allow-list-all-off": ({"REVIEWPOINT_FEATURES": ""}, set()),
    "one-feature-off": (
        {"REVIEWPOINT_FEATURE_USERS_EXPORT_FULL": "false"},
        ALL - {"users:export_full"},
    ),
    "one-feature-on-is-a-no-op": ({"REVIEWPOINT_FEATURE_USERS_EXPORT": "true"}, ALL),
    # The `users` family: the console is a family of its own.
    "family-off": ({"REVIEWPOINT_FEATURE_USERS": "false"}, {"console"}),
    "console-off": ({"REVIEWPOINT_FEATURE_CONSOLE": "false"}, ALL - {"console"}),
    "family-on": ({"REVIEWPOINT_FEATURE_USERS": "true"}, ALL),
    "family-off-one-feature-on": (
        {"REVIEWPOINT_FEATURE_USERS": "false", "REVIEWPOINT_FEATURE_USERS_EXPORT_ALIVE": "true"},
        {"users:export_alive", "console"},
    ),
    "family-on-one-feature-off": (
        {"REVIEWPOINT_FEATURE_USERS": "true", "REVIEWPOINT_FEATURE_USERS_EXPORT": "false"},
        ALL - {"users:export"},
    ),
    # 2 beats 3: a listed feature is on even when its family is off.
    "family-off-allow-list-on": (
        {"REVIEWPOINT_FEATURE_USERS": "false", "REVIEWPOINT_FEATURES": "users:export"},
        {"users:export"},
    ),
    # 3 beats 4: the family setting decides the features the list does not name.
    "family-on-beats-allow-list-for-the-rest": (
        {"REVIEWPOINT_FEATURE_USERS": "true", "REVIEWPOINT_FEATURES": "users:export"},
        ALL - {"console"},
    ),
    # 1 beats 2: a feature's own variable decides even when the list names it.
    "own-off-beats-allow-list": (
        {
            "REVIEWPOINT_FEATURES": "users:export,users:export_full",
            "REVIEWPOINT_FEATURE_USERS_EXPORT_FULL": "false",
        },
        {"users:export"},
    ),
    # 1 beats 4: a feature's own variable can switch on what the list leaves out.
    "own-on-beats-allow-list": (
        {
            "REVIEWPOINT_FEATURES": "users:export",
            "REVIEWPOINT_FEATURE_USERS_EXPORT_SIMPLE": "true",
        },
        {"users:export", "users:export_simple"},
    ),
}


@pytest.mark.parametrize("case", list(PRECEDENCE))
def test_feature_settings_combine_most_specific_first(
    monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    environment, expected = PRECEDENCE[case]
    _set(monkeypatch, environment)
    assert _on(_settings()) == expected


@pytest.mark.parametrize("value", ["false", "FALSE", "0", "off", "no"])
def test_feature_variables_accept_the_usual_spellings_of_false(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("REVIEWPOINT_FEATURE_USERS_EXPORT_FULL", value)
    assert _on(_settings()) == ALL - {"users:export_full"}


def test_settings_constructed_in_code_combine_like_the_environment() -> None:
    settings = load_settings(_env_file=None, features=["users:export"], feature_users=False)
    assert _on(settings) == {"users:export"}


def test_asking_about_an_unknown_feature_is_an_error() -> None:
    with pytest.raises(KeyError, match="users:import"):
        is_enabled(_settings(), "users:import")


# A disabled feature answers 403 before any credential is checked


@pytest.mark.parametrize("feature", list(PATHS))
def test_family_switched_off_answers_403_naming_each_feature_without_credentials(
    monkeypatch: pytest.MonkeyPatch, db_url: str, feature: str
) -> None:
    monkeypatch.setenv("REVIEWPOINT_FEATURE_USERS", "false")
    with _client(db_url) as client:
        response = client.get(PATHS[feature])
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": f"Feature '{feature}' is disabled"}
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize("feature", list(PATHS))
def test_one_feature_switched_off_answers_403_and_leaves_the_others_alone(
    monkeypatch: pytest.MonkeyPatch, db_url: str, feature: str
) -> None:
    monkeypatch.setenv(f"REVIEWPOINT_FEATURE_{feature.replace(':', '_').upper()}", "false")
    secret = create_api_key(db_url, ["users:export_full"])[1]
    with _client(db_url) as client:
        response = client.get(PATHS[feature], headers={"X-API-Key": secret})
        others = {
            other: client.get(path, headers={"X-API-Key": secret}).status_code
            for other, path in PATHS.items()
            if other != feature
        }
    assert response.status_code == 403
    assert response.json() == {"detail": f"Feature '{feature}' is disabled"}
    assert others == dict.fromkeys(others, 200)


def test_allow_list_serves_only_the_listed_features(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.setenv("REVIEWPOINT_FEATURES", "users:export,users:export_alive")
    insert_users(db_url, [("listed@example.com", "Listed")])
    secret = create_api_key(db_url, ["users:export_full"])[1]
    with _client(db_url) as client:
        statuses = {
            feature: client.get(path, headers={"X-API-Key": secret}).status_code
            for feature, path in PATHS.items()
        }
        full = client.get(EXPORT_FULL, headers={"X-API-Key": secret})
        simple = client.get(EXPORT_SIMPLE)
    assert statuses == {
        "users:export": 200,
        "users:export_full": 403,
        "users:export_alive": 200,
        "users:export_simple": 403,
    }
    assert full.json() == {"detail": "Feature 'users:export_full' is disabled"}
    assert simple.json() == {"detail": "Feature 'users:export_simple' is disabled"}


@pytest.mark.parametrize("feature", list(CSV_PATHS))
def test_disabled_export_is_403_even_with_a_revoked_key(
    monkeypatch: pytest.MonkeyPatch, db_url: str, feature: str
) -> None:
    """A revoked key is a 401 on an enabled export; the feature check must come first."""
    key_id, secret = create_api_key(db_url, ["users:export_full"])
    revoke_api_key(db_url, key_id)
    monkeypatch.setenv("REVIEWPOINT_FEATURE_USERS", "false")
    with _client(db_url) as client:
        response = client.get(CSV_PATHS[feature], headers={"X-API-Key": secret})
    assert response.status_code == 403
    assert response.json() == {"detail": f"Feature '{feature}' is disabled"}


@pytest.mark.parametrize("feature", list(CSV_PATHS))
def test_disabled_export_never_looks_at_a_valid_key(
    monkeypatch: pytest.MonkeyPatch, db_url: str, feature: str
) -> None:
    key_id, secret = create_api_key(db_url, ["users:export_full"])
    monkeypatch.setenv("REVIEWPOINT_FEATURE_USERS", "false")
    with _client(db_url) as client:
        response = client.get(CSV_PATHS[feature], headers={"X-API-Key": secret})
    assert response.status_code == 403
    assert response.json() == {"detail": f"Feature '{feature}' is disabled"}
    assert _last_used_at(db_url, key_id) is None


# Enabled features keep their own access rules


ENABLED_BY: dict[str, dict[str, str]] = {
    "default": {},
    "allow-list": {"REVIEWPOINT_FEATURES": ",".join(FEATURES)},
    "family-on": {"REVIEWPOINT_FEATURE_USERS": "true"},
    "family-off-own-on": {
        "REVIEWPOINT_FEATURE_USERS": "false",
        "REVIEWPOINT_FEATURE_USERS_EXPORT": "true",
        "REVIEWPOINT_FEATURE_USERS_EXPORT_FULL": "true",
        "REVIEWPOINT_FEATURE_USERS_EXPORT_ALIVE": "true",
        "REVIEWPOINT_FEATURE_USERS_EXPORT_SIMPLE": "true",
    },
}


@pytest.mark.parametrize("how", list(ENABLED_BY))
def test_enabled_exports_still_need_credentials_and_open_endpoints_stay_open(
    monkeypatch: pytest.MonkeyPatch, db_url: str, how: str
) -> None:
    _set(monkeypatch, ENABLED_BY[how])
    with _client(db_url) as client:
        anonymous = {feature: client.get(path) for feature, path in CSV_PATHS.items()}
        alive = client.get(EXPORT_ALIVE)
        simple = client.get(EXPORT_SIMPLE)
    for response in anonymous.values():
        assert response.status_code == 401
        assert "X-API-Key" in response.headers["WWW-Authenticate"]
        assert "disabled" not in response.json()["detail"]
    assert alive.status_code == 200
    assert alive.json() == {"status": "users export alive"}
    assert simple.status_code == 200
    assert simple.json() == {"users": "export simple status"}


def test_enabled_export_with_a_key_downloads_when_a_sibling_is_off(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.setenv("REVIEWPOINT_FEATURE_USERS_EXPORT_FULL", "false")
    insert_users(db_url, [("kept@example.com", "Kept On")])
    secret = create_api_key(db_url, ["users:export"])[1]
    with _client(db_url) as client:
        response = client.get(EXPORT, headers={"X-API-Key": secret})
    assert response.status_code == 200
    assert response.text.startswith("id,email,name\r\n")
    assert "kept@example.com,Kept On\r\n" in response.text
