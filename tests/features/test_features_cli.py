"""`reviewpoint features list|enable|disable|reset`, run as an operator runs them."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reviewpoint.features.catalog import FEATURES
from tests.conftest import eventually
from tests.data import admin_headers
from tests.features.overrides import ALIVE, FEATURES_API, override, recorded_changes
from tests.test_cli import assert_ok, cli, one_line_error

KNOWN = (
    "known: users:export, users:export_full, users:export_alive, users:export_simple, "
    "users:export_anonymized, console"
)
CHANGES = ("enable", "disable", "reset")


def _listed(stdout: str) -> dict[str, list[str]]:
    """`features list` rows by name: [enabled, source, changed by, changed at]."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["name", "enabled", "source", "changed", "by", "changed", "at"]
    rows = {}
    for line in lines[1:]:
        name, enabled, source, changed_by, *changed_at = line.split()
        rows[name] = [enabled, source, changed_by, " ".join(changed_at)]
    return rows


# list


def test_list_shows_every_flag_with_its_source(db_url: str, tmp_path: Path) -> None:
    override(db_url, "users:export_full", False)
    result = cli(tmp_path, db_url, "features", "list", env={"REVIEWPOINT_FEATURE_USERS": "false"})
    assert_ok(result)
    rows = _listed(result.stdout)
    assert list(rows) == list(FEATURES)
    assert rows["users:export"] == ["off", "environment", "-", "-"]
    enabled, source, changed_by, changed_at = rows["users:export_full"]
    assert (enabled, source, changed_by) == ("off", "override", "cli:elsewhere")
    assert changed_at.endswith("Z")


def test_list_fits_an_80_column_terminal(db_url: str, tmp_path: Path) -> None:
    override(db_url, "users:export_alive", False)
    result = cli(tmp_path, db_url, "features", "list")
    assert_ok(result)
    assert max(len(line.rstrip()) for line in result.stdout.splitlines()) <= 80


def test_list_json_is_what_the_http_api_answers(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    override(db_url, "users:export_simple", False)
    result = cli(tmp_path, db_url, "features", "list", "--json")
    assert_ok(result)
    headers = admin_headers(client, db_url)
    assert json.loads(result.stdout) == client.get(FEATURES_API, headers=headers).json()


# enable, disable, reset


def test_disable_switches_a_flag_off_and_records_the_operator(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    result = cli(tmp_path, db_url, "features", "disable", "users:export_alive")
    assert_ok(result)
    assert result.stdout == ""
    assert "users:export_alive is off (override)" in result.stderr
    [change] = recorded_changes(db_url)
    assert (change.name, change.action, change.old_enabled, change.new_enabled) == (
        "users:export_alive",
        "disable",
        True,
        False,
    )
    assert change.changed_by_id is None
    assert change.changed_by == f"cli:{getpass.getuser()}"
    # A running server serves it within its refresh interval.
    assert eventually(lambda: client.get(ALIVE).status_code == 403, seconds=5)


def test_enable_overrides_an_environment_that_switched_the_flag_off(
    db_url: str, tmp_path: Path
) -> None:
    off = {"REVIEWPOINT_FEATURE_USERS_EXPORT_ALIVE": "false"}
    result = cli(tmp_path, db_url, "features", "enable", "users:export_alive", env=off)
    assert_ok(result)
    assert "users:export_alive is on (override)" in result.stderr
    [change] = recorded_changes(db_url)
    assert (change.action, change.old_enabled, change.new_enabled) == ("enable", False, True)
    rows = _listed(cli(tmp_path, db_url, "features", "list", env=off).stdout)
    assert rows["users:export_alive"][:2] == ["on", "override"]


def test_reset_returns_the_flag_to_its_default_and_records_it(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    override(db_url, "users:export_alive", False)
    assert eventually(lambda: client.get(ALIVE).status_code == 403, seconds=5)
    result = cli(tmp_path, db_url, "features", "reset", "users:export_alive")
    assert_ok(result)
    assert "users:export_alive is on (default)" in result.stderr
    newest = recorded_changes(db_url)[0]
    assert (newest.action, newest.old_enabled, newest.new_enabled) == ("reset", False, True)
    assert newest.changed_by == f"cli:{getpass.getuser()}"
    assert eventually(lambda: client.get(ALIVE).status_code == 200, seconds=5)


# Errors: one line, no traceback


@pytest.mark.parametrize("command", CHANGES)
def test_an_unknown_flag_fails_in_one_line_listing_the_known_ones(
    db_url: str, tmp_path: Path, command: str
) -> None:
    line = one_line_error(cli(tmp_path, db_url, "features", command, "users:import"))
    assert line == f"error: Unknown feature 'users:import'; {KNOWN}"
    assert recorded_changes(db_url) == []


def test_an_unknown_flag_is_refused_before_the_database_is_opened(tmp_path: Path) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'reviewpoint.db'}"
    line = one_line_error(cli(tmp_path, missing, "features", "disable", "users:import"))
    assert line == f"error: Unknown feature 'users:import'; {KNOWN}"


@pytest.mark.parametrize("command", ["list", *CHANGES])
def test_a_database_that_cannot_be_opened_fails_in_one_line(tmp_path: Path, command: str) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'reviewpoint.db'}"
    args = ["features", command] + ([] if command == "list" else ["users:export_alive"])
    line = one_line_error(cli(tmp_path, missing, *args))
    assert line.startswith("error: cannot reach the database ")


@pytest.mark.parametrize("command", ["list", *CHANGES])
def test_a_database_never_upgraded_fails_in_one_line_naming_the_table(
    tmp_path: Path, command: str
) -> None:
    never_upgraded = f"sqlite+aiosqlite:///{tmp_path / 'never-upgraded.db'}"
    args = ["features", command] + ([] if command == "list" else ["users:export_alive"])
    line = one_line_error(cli(tmp_path, never_upgraded, *args))
    assert "feature_flags" in line
    assert line.endswith("run `reviewpoint db upgrade`")


def test_a_missing_name_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = cli(tmp_path, None, "features", "disable")
    line = one_line_error(result)
    assert "NAME" in line
