"""Settings: defaults, the `REVIEWPOINT_` environment, `.env`, and one-line refusals.

Every test runs in an empty working directory with no `REVIEWPOINT_*` variables,
so neither the developer's shell nor a `.env` in the checkout leaks in.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reviewpoint import security
from reviewpoint.config import Settings, SettingsError, load_settings
from reviewpoint.main import create_app
from tests.data import BULK_PASSWORD, insert_user, login

REVIEWPOINT = str(Path(sys.executable).parent / "reviewpoint")
STRONG_SECRET = "x" * 32
ANONYMIZE_KEY = "a" * 32
# The constant that signed every token when REVIEWPOINT_ENV was unset, up to 0.1.0.
PUBLISHED_SECRET = "reviewpoint-dev-secret-do-not-use-in-production"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("REVIEWPOINT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _refusal(**overrides: object) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert message, "a refusal must say why"
    assert len(message.splitlines()) == 1, message
    return message


# Defaults and sources


def test_defaults_are_a_local_sqlite_file_no_env_and_no_secret() -> None:
    settings = load_settings()
    assert settings.db_url == "sqlite+aiosqlite:///./reviewpoint.db"
    assert settings.env is None
    assert settings.jwt_secret_key is None
    assert settings.is_sqlite


def test_reviewpoint_prefixed_environment_variables_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REVIEWPOINT_DB_URL", "postgresql+asyncpg://app@db.internal:5432/rvp")
    monkeypatch.setenv("REVIEWPOINT_ENV", "test")
    monkeypatch.setenv("REVIEWPOINT_ACCESS_TOKEN_EXPIRE_MINUTES", "5")
    settings = load_settings()
    assert settings.db_url == "postgresql+asyncpg://app@db.internal:5432/rvp"
    assert settings.env == "test"
    assert settings.access_token_expire_minutes == 5
    assert not settings.is_sqlite


def test_unprefixed_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENV", "prod")
    monkeypatch.setenv("DB_URL", "postgresql+asyncpg://app@elsewhere/rvp")
    settings = load_settings()
    assert settings.env is None
    assert settings.db_url == "sqlite+aiosqlite:///./reviewpoint.db"


def test_features_variable_is_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIEWPOINT_FEATURES", "users:export_full, users:export_alive ,")
    assert load_settings().features == ["users:export_full", "users:export_alive"]


def test_dot_env_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "REVIEWPOINT_ENV=test\nREVIEWPOINT_DB_URL=sqlite+aiosqlite:///./from-dot-env.db\n"
    )
    settings = load_settings()
    assert settings.env == "test"
    assert settings.db_url == "sqlite+aiosqlite:///./from-dot-env.db"


def test_env_file_passed_explicitly_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / "elsewhere.env"
    env_file.write_text("REVIEWPOINT_EXPORT_CHUNK_ROWS=250\n")
    assert load_settings(_env_file=env_file).export_chunk_rows == 250


def test_environment_variable_beats_dot_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("REVIEWPOINT_ENV=test\n")
    monkeypatch.setenv("REVIEWPOINT_ENV", "dev")
    assert load_settings().env == "dev"


def test_env_file_none_ignores_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REVIEWPOINT_ENV=test\n")
    assert load_settings(_env_file=None).env is None


def test_bad_setting_in_dot_env_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REVIEWPOINT_ENV=staging\n")
    assert "REVIEWPOINT_ENV" in _refusal()


# The token signing secret


def test_prod_without_jwt_secret_is_refused_in_one_line_naming_it() -> None:
    assert "REVIEWPOINT_JWT_SECRET_KEY" in _refusal(env="prod")


@pytest.mark.parametrize("env", ["prod", "dev", "test", None])
def test_the_secret_once_published_in_the_code_is_refused_in_every_env(env: str | None) -> None:
    message = _refusal(env=env, jwt_secret_key=PUBLISHED_SECRET)
    assert "REVIEWPOINT_JWT_SECRET_KEY" in message
    assert PUBLISHED_SECRET not in message


def test_unset_env_with_a_short_secret_is_refused_as_prod_would() -> None:
    message = _refusal(jwt_secret_key="too-short")
    assert "REVIEWPOINT_JWT_SECRET_KEY" in message
    assert "too-short" not in message


@pytest.mark.parametrize("env", ["dev", "test"])
def test_dev_and_test_accept_any_secret_or_none(env: str) -> None:
    assert load_settings(env=env).jwt_secret_key is None
    short = load_settings(env=env, jwt_secret_key="short").jwt_secret_key
    assert short is not None
    assert short.get_secret_value() == "short"


def test_unset_env_without_a_secret_loads_for_commands_that_sign_nothing() -> None:
    # db upgrade, users create, api-keys create: an operator runs them without one.
    assert load_settings().jwt_secret_key is None


def test_prod_with_a_31_character_secret_is_refused_without_echoing_it() -> None:
    short = "s3cr3t-" + "k" * 24
    assert len(short) == 31
    message = _refusal(env="prod", jwt_secret_key=short)
    assert "REVIEWPOINT_JWT_SECRET_KEY" in message
    assert short not in message


def test_prod_with_a_32_character_secret_is_accepted() -> None:
    settings = load_settings(env="prod", jwt_secret_key=STRONG_SECRET)
    assert settings.env == "prod"
    assert settings.jwt_secret_key.get_secret_value() == STRONG_SECRET


def test_prod_reads_the_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIEWPOINT_ENV", "prod")
    monkeypatch.setenv("REVIEWPOINT_JWT_SECRET_KEY", STRONG_SECRET)
    assert load_settings().jwt_secret_key.get_secret_value() == STRONG_SECRET


def test_secret_is_hidden_from_the_settings_repr() -> None:
    settings = load_settings(env="prod", jwt_secret_key=STRONG_SECRET)
    assert STRONG_SECRET not in repr(settings)
    assert STRONG_SECRET not in str(settings.model_dump())


# Serving: the app resolves its signing secret once


def test_create_app_without_env_or_secret_is_refused_in_one_line_naming_it() -> None:
    with pytest.raises(SettingsError) as caught:
        create_app(load_settings())
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert "REVIEWPOINT_JWT_SECRET_KEY" in message
    assert "dev or test" in message


def test_create_app_signs_with_the_configured_secret() -> None:
    app = create_app(
        load_settings(env="prod", jwt_secret_key=STRONG_SECRET, anonymize_key=ANONYMIZE_KEY)
    )
    assert app.state.jwt_secret == STRONG_SECRET


# The key of anonymized exports' pseudonyms


@pytest.mark.parametrize("env", ["prod", None])
def test_prod_without_an_anonymize_key_is_refused_at_start_up_in_one_line(
    env: str | None,
) -> None:
    with pytest.raises(SettingsError) as caught:
        create_app(load_settings(env=env, jwt_secret_key=STRONG_SECRET))
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert "REVIEWPOINT_ANONYMIZE_KEY" in message
    assert "REVIEWPOINT_FEATURE_USERS_EXPORT_ANONYMIZED=false" in message


def test_prod_with_anonymized_exports_switched_off_starts_without_a_key() -> None:
    settings = load_settings(
        env="prod", jwt_secret_key=STRONG_SECRET, feature_users_export_anonymized=False
    )
    assert create_app(settings).state.pseudonym_key is None


def test_prod_keys_pseudonyms_with_the_configured_key() -> None:
    settings = load_settings(env="prod", jwt_secret_key=STRONG_SECRET, anonymize_key=ANONYMIZE_KEY)
    key = create_app(settings).state.pseudonym_key
    assert key.digest(b"x") == hmac.digest(ANONYMIZE_KEY.encode(), b"x", "sha256")
    assert ANONYMIZE_KEY not in repr(settings)


def test_a_short_anonymize_key_is_refused_unless_dev_or_test() -> None:
    message = _refusal(env="prod", jwt_secret_key=STRONG_SECRET, anonymize_key="short")
    assert "REVIEWPOINT_ANONYMIZE_KEY" in message
    assert "short" not in message.replace("REVIEWPOINT", "")
    assert load_settings(env="test", anonymize_key="short").anonymize_key is not None


@pytest.mark.parametrize("env", ["dev", "test"])
def test_dev_and_test_apps_without_an_anonymize_key_each_use_a_random_one(env: str) -> None:
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("reviewpoint.exports")
    logger.addHandler(handler)
    try:
        first, second = (create_app(load_settings(env=env)) for _ in range(2))
    finally:
        logger.removeHandler(handler)
    assert first.state.pseudonym_key.digest(b"x") != second.state.pseudonym_key.digest(b"x")
    assert len(warnings) == 2
    assert "pseudonyms change when this process restarts" in warnings[0]


def _app_settings(db_url: str, env: str) -> Settings:
    return load_settings(_env_file=None, env=env, db_url=db_url, log_level="warning")


@pytest.mark.parametrize("env", ["dev", "test"])
def test_dev_and_test_apps_without_a_secret_each_sign_with_their_own_random_one(
    db_url: str, env: str
) -> None:
    insert_user(db_url, "admin@example.com", is_admin=True)
    first, second = (create_app(_app_settings(db_url, env)) for _ in range(2))
    assert first.state.jwt_secret != second.state.jwt_secret
    assert len(first.state.jwt_secret) >= 32
    with TestClient(first) as one, TestClient(second) as other:
        headers = login(one, "admin@example.com", BULK_PASSWORD)
        assert one.get("/api/v1/auth/me", headers=headers).status_code == 200
        refused = other.get("/api/v1/auth/me", headers=headers)
        assert refused.status_code == 401
        assert refused.json() == {"detail": "Invalid or expired access token"}


def test_a_token_signed_with_the_once_published_secret_is_refused_by_a_dev_app(
    db_url: str,
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    forged = security.create_access_token(
        subject=str(admin_id), secret=PUBLISHED_SECRET, lifetime=timedelta(minutes=5)
    )
    with TestClient(create_app(_app_settings(db_url, "dev"))) as client:
        response = client.get(
            "/api/v1/users/export-full", headers={"Authorization": f"Bearer {forged}"}
        )
    assert response.status_code == 401
    assert "admin@example.com" not in response.text


# Other refusals


def test_unknown_env_value_is_refused_in_one_line_naming_it() -> None:
    message = _refusal(env="staging")
    assert "REVIEWPOINT_ENV" in message


@pytest.mark.parametrize(
    "db_url",
    [
        # ids free of "postgresql": conftest counts those as PostgreSQL tests
        pytest.param("sqlite:///./reviewpoint.db", id="sync-sqlite"),
        pytest.param("postgresql://postgres@127.0.0.1/rvp", id="sync-pg"),
        pytest.param("mysql+aiomysql://root@127.0.0.1/rvp", id="mysql"),
        pytest.param("not a url", id="not-a-url"),
    ],
)
def test_db_url_without_a_supported_async_driver_is_refused(db_url: str) -> None:
    assert "REVIEWPOINT_DB_URL" in _refusal(db_url=db_url)


def test_db_url_refusal_does_not_echo_credentials() -> None:
    message = _refusal(db_url="mysql://root:hunter2-password@127.0.0.1/rvp")
    assert "hunter2-password" not in message


def test_unknown_feature_name_is_refused_in_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REVIEWPOINT_FEATURES", "users:export,users:export_everything")
    message = _refusal()
    assert "REVIEWPOINT_FEATURES" in message
    assert "users:export_everything" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REVIEWPOINT_FEATURE_USERS_EXPORT_FULL", "maybe"),
        ("REVIEWPOINT_ACCESS_TOKEN_EXPIRE_MINUTES", "0"),
        ("REVIEWPOINT_EXPORT_CHUNK_ROWS", "lots"),
        ("REVIEWPOINT_LOG_LEVEL", "verbose"),
    ],
)
def test_invalid_value_is_refused_in_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert variable in _refusal()


def test_several_bad_settings_are_all_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIEWPOINT_ENV", "staging")
    monkeypatch.setenv("REVIEWPOINT_DB_URL", "mysql://root@127.0.0.1/rvp")
    message = _refusal()
    assert "REVIEWPOINT_ENV" in message
    assert "REVIEWPOINT_DB_URL" in message


# The command line stops on a bad setting


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port already listened on: a `serve` that got past its settings fails loudly."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("command", "environment", "named"),
    [
        (["serve"], {"REVIEWPOINT_ENV": "prod"}, "REVIEWPOINT_JWT_SECRET_KEY"),
        (
            ["serve"],
            {"REVIEWPOINT_ENV": "prod", "REVIEWPOINT_JWT_SECRET_KEY": STRONG_SECRET},
            "REVIEWPOINT_ANONYMIZE_KEY",
        ),
        # Unset env is never weaker than prod: no secret, no server.
        (["serve"], {}, "REVIEWPOINT_JWT_SECRET_KEY"),
        (["serve"], {"REVIEWPOINT_JWT_SECRET_KEY": "too-short"}, "REVIEWPOINT_JWT_SECRET_KEY"),
        (
            ["serve"],
            {"REVIEWPOINT_ENV": "prod", "REVIEWPOINT_JWT_SECRET_KEY": "too-short"},
            "REVIEWPOINT_JWT_SECRET_KEY",
        ),
        (
            ["db", "upgrade"],
            {"REVIEWPOINT_DB_URL": "mysql://root@127.0.0.1/rvp"},
            "REVIEWPOINT_DB_URL",
        ),
        (["db", "upgrade"], {"REVIEWPOINT_FEATURES": "users:nope"}, "REVIEWPOINT_FEATURES"),
    ],
)
def test_cli_with_a_bad_setting_exits_with_one_line_and_no_traceback(
    tmp_path: Path, taken_port: int, command: list[str], environment: dict[str, str], named: str
) -> None:
    if command == ["serve"]:
        command = ["serve", "--host", "127.0.0.1", "--port", str(taken_port)]
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("REVIEWPOINT_") and name != "FORCE_COLOR"
    }
    result = subprocess.run(
        [REVIEWPOINT, *command],
        env={**env, **environment},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    # Nothing was touched: the default SQLite file was never created.
    assert list(tmp_path.iterdir()) == []
