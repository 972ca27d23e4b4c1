"""What every `reviewpoint` command owes an operator, checked over all registered commands.

The commands are read from the Typer app itself, so a command added later is checked
too: it gets arguments from its own parameters (or from VALID_ARGUMENTS when it
validates them before reaching the database).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main

from reviewpoint.cli import app
from reviewpoint.migrations import revisions
from tests.cli.runner import assert_ok, cli, one_line_error
from tests.conftest import served_process

Path_ = tuple[str, ...]


# Typer builds on its own copy of click (`typer._click`): the tree is read through the
# attributes both share (`commands`, `params`, `opts`, `required`, `is_flag`).
def _leaves(command: Any, path: Path_ = ()) -> dict[Path_, Any]:
    if hasattr(command, "commands"):
        found: dict[Path_, Any] = {}
        for name, sub in command.commands.items():
            found |= _leaves(sub, (*path, name))
        return found
    return {path: command}


COMMANDS = _leaves(typer.main.get_command(app))
GROUPS = sorted({path[:-1] for path in COMMANDS if len(path) > 1})

# Arguments that pass a command's own checks (of an email, a scope...), so that it
# reaches the database.
VALID_ARGUMENTS: dict[Path_, list[str]] = {
    ("users", "create"): ["--email", "new@example.com", "--password", "long-enough-1"],
    ("api-keys", "create"): ["--name", "nightly", "--scope", "users:export"],
    # Port 0: any free one. The demo only gets that far on a database it can use.
    ("demo",): ["--host", "127.0.0.1", "--port", "0"],
    # A flag's name is checked against the catalogue before the database is read.
    ("features", "enable"): ["users:export"],
    ("features", "disable"): ["users:export"],
    ("features", "reset"): ["users:export"],
    # Format, fields and filters are checked by the HTTP export's schema first.
    ("export",): ["--full", "--format", "ndjson", "--fields", "id,email", "--is-active", "true"],
}
# Commands that need no migrated database, and why.
NO_SCHEMA_NEEDED: dict[Path_, str] = {
    ("db", "upgrade"): "it creates the schema",
    ("demo",): "it migrates the database itself",
}
# Commands that answer about an empty database (exit 0) with a note to upgrade it.
ANSWER_WITH_A_NOTE = {("db", "current"), ("db", "history")}
OLDER = revisions()[-2].revision


def _arguments(path: Path_) -> list[str]:
    """The command's own words, then a value for each required parameter."""
    if path in VALID_ARGUMENTS:
        return [*path, *VALID_ARGUMENTS[path]]
    words = list(path)
    for parameter in COMMANDS[path].params:
        if parameter.required:
            value = "1" if parameter.type_descriptor.annotation is int else "x"
            is_argument = parameter.param_type_name == "argument"
            words += [value] if is_argument else [parameter.opts[0], value]
    return words


def _param(path: Path_) -> object:
    return pytest.param(path, id="-".join(path) or "reviewpoint")


def test_the_command_list_is_what_this_file_expects() -> None:
    # Guards the tables above: a renamed command must not silently drop out of them.
    for path in [*VALID_ARGUMENTS, *NO_SCHEMA_NEEDED, *ANSWER_WITH_A_NOTE]:
        assert path in COMMANDS, path


@pytest.mark.parametrize("path", [_param(path) for path in [(), *GROUPS, *COMMANDS]])
def test_help_shows_flags_as_flags_without_a_bool_placeholder(tmp_path: Path, path: Path_) -> None:
    result = cli(tmp_path, None, *path, "--help", env={"COLUMNS": "80"})
    assert_ok(result)
    assert "Usage: reviewpoint" in result.stdout
    assert "<bool>" not in result.stdout
    assert "BOOLEAN" not in result.stdout
    for parameter in COMMANDS[path].params if path in COMMANDS else []:
        if parameter.param_type_name == "option" and parameter.is_flag:
            assert parameter.opts[0] in result.stdout


@pytest.mark.parametrize(
    "path", [_param(path) for path in COMMANDS if path not in NO_SCHEMA_NEEDED]
)
def test_every_command_on_a_database_never_upgraded_says_to_run_db_upgrade(
    empty_db_url: str, tmp_path: Path, path: Path_
) -> None:
    result = cli(tmp_path, empty_db_url, *_arguments(path), env={"REVIEWPOINT_ENV": "dev"})
    if path in ANSWER_WITH_A_NOTE:
        assert_ok(result)
        assert "run `reviewpoint db upgrade`" in result.stderr
        return
    line = one_line_error(result)
    assert "run `reviewpoint db upgrade`" in line


def _unreachable_sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'reviewpoint.db'}"


# `serve` starts even so: see the test after the next.
@pytest.mark.parametrize("path", [_param(path) for path in COMMANDS if path != ("serve",)])
def test_every_command_on_an_unreachable_database_fails_in_one_line(
    tmp_path: Path, path: Path_
) -> None:
    db_url = _unreachable_sqlite(tmp_path)
    line = one_line_error(cli(tmp_path, db_url, *_arguments(path)))
    assert line.startswith(f"error: cannot reach the database {db_url}: "), line


def test_a_database_server_refusing_connections_fails_in_one_line_naming_it(
    tmp_path: Path,
) -> None:
    # Port 1 (tcpmux) is privileged and unused: the connection is refused at once.
    db_url = "postgresql+asyncpg://rvp:s3cret@127.0.0.1:1/reviewpoint"
    line = one_line_error(cli(tmp_path, db_url, "users", "list"))
    assert line.startswith(
        "error: cannot reach the database postgresql+asyncpg://rvp:***@127.0.0.1:1/reviewpoint: "
    ), line
    assert "s3cret" not in line


def test_serve_on_an_unreachable_database_starts_anyway_and_says_so(tmp_path: Path) -> None:
    """Readiness reports a database that is down; the server serves once it is back."""
    log = tmp_path / "server.log"
    with served_process(_unreachable_sqlite(tmp_path), log) as url:
        ready = httpx.get(f"{url}/api/v1/health/ready", timeout=30)
    assert (ready.status_code, ready.json()) == (503, {"detail": "Database unreachable"})
    assert "cannot reach the database" in log.read_text()
    assert "serving anyway" in log.read_text()


def test_serve_refuses_a_database_never_upgraded_or_behind_in_one_line(
    empty_db_url: str, tmp_path: Path
) -> None:
    env = {"REVIEWPOINT_ENV": "dev", "REVIEWPOINT_JWT_SECRET_KEY": "k" * 40}
    never = cli(tmp_path, empty_db_url, "serve", "--port", "0", env=env)
    assert "run `reviewpoint db upgrade`" in one_line_error(never)
    assert_ok(cli(tmp_path, empty_db_url, "db", "upgrade", OLDER))
    behind = cli(tmp_path, empty_db_url, "serve", "--port", "0", env=env)
    line = one_line_error(behind)
    assert f"the database is at revision {OLDER}, older than this release's" in line
    assert "run `reviewpoint db upgrade`" in line
