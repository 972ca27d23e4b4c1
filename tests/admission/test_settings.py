"""Admission settings: defaults, the environment, and one-line refusals naming the variable."""

from __future__ import annotations

import os

import pytest

from reviewpoint.config import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REVIEWPOINT_"):
            monkeypatch.delenv(name)


def test_defaults_are_per_process_memory_and_the_documented_budgets() -> None:
    settings = load_settings(_env_file=None)
    assert settings.rate_limit_storage == "memory://"
    assert settings.export_rate_limit == "30/minute"
    assert settings.login_rate_limit == "10/minute"
    assert settings.export_max_concurrent_per_credential == 2


def test_admission_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REVIEWPOINT_RATE_LIMIT_STORAGE", "rediss://:secret@cache.internal:6380/2")
    monkeypatch.setenv("REVIEWPOINT_EXPORT_RATE_LIMIT", "100 per hour")
    monkeypatch.setenv("REVIEWPOINT_LOGIN_RATE_LIMIT", "5/minute")
    monkeypatch.setenv("REVIEWPOINT_EXPORT_MAX_CONCURRENT_PER_CREDENTIAL", "4")
    settings = load_settings(_env_file=None)
    assert settings.rate_limit_storage == "rediss://:secret@cache.internal:6380/2"
    assert settings.export_rate_limit == "100 per hour"
    assert settings.login_rate_limit == "5/minute"
    assert settings.export_max_concurrent_per_credential == 4


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("REVIEWPOINT_RATE_LIMIT_STORAGE", "memcached://127.0.0.1:11211", "memory:// or a Redis"),
        ("REVIEWPOINT_RATE_LIMIT_STORAGE", "127.0.0.1:6379", "memory:// or a Redis"),
        ("REVIEWPOINT_RATE_LIMIT_STORAGE", "redis://127.0.0.1:sixty/0", "invalid port"),
        ("REVIEWPOINT_EXPORT_RATE_LIMIT", "30/fortnight", "not a rate limit"),
        ("REVIEWPOINT_LOGIN_RATE_LIMIT", "0/minute", "between 1 and"),
        ("REVIEWPOINT_LOGIN_RATE_LIMIT", "5/second;10/minute", "one rate limit"),
        ("REVIEWPOINT_EXPORT_MAX_CONCURRENT_PER_CREDENTIAL", "0", "greater than or equal to 1"),
    ],
)
def test_bad_admission_setting_is_refused_in_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert f"{variable}: " in message
    assert reason in message


def test_a_refused_redis_url_does_not_echo_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIEWPOINT_RATE_LIMIT_STORAGE", "redis://:hunter2@cache:port/0")
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert "hunter2" not in str(caught.value)
