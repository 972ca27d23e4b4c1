"""`reviewpoint db current|history|upgrade`: what the schema is, and moving it forward only."""

from __future__ import annotations

import json
from pathlib import Path

from reviewpoint.migrations import revisions
from tests.cli.runner import assert_fits, assert_ok, cli, one_line_error, sql_rows
from tests.data import execute_sql

SHIPPED = [known.revision for known in revisions()]
HEAD = SHIPPED[-1]
OLDER, OLDEST = SHIPPED[1], SHIPPED[0]


def _version(db_url: str) -> list[tuple[object, ...]]:
    return sql_rows(db_url, "SELECT version_num FROM alembic_version")


def test_db_current_on_an_empty_database_prints_none_and_says_to_upgrade(
    empty_db_url: str, tmp_path: Path
) -> None:
    result = cli(tmp_path, empty_db_url, "db", "current")
    assert_ok(result)
    assert result.stdout == "none\n"
    assert "run `reviewpoint db upgrade`" in result.stderr
    assert not (tmp_path / "fresh.db").exists()  # a SQLite file is not created by asking


def test_db_upgrade_step_by_step_prints_the_revision_reached_and_never_downgrades(
    empty_db_url: str, tmp_path: Path
) -> None:
    first = cli(tmp_path, empty_db_url, "db", "upgrade", OLDER)
    assert_ok(first)
    assert first.stderr == f"database upgraded from no schema to revision {OLDER}\n"
    assert _version(empty_db_url) == [(OLDER,)]

    current = cli(tmp_path, empty_db_url, "db", "current")
    assert_ok(current)
    assert current.stdout == f"{OLDER}\n"
    assert f"the latest revision is {HEAD}" in current.stderr

    down = cli(tmp_path, empty_db_url, "db", "upgrade", OLDEST)
    assert one_line_error(down) == (
        f"error: the database is at revision {OLDER}, which is newer than {OLDEST}; "
        "reviewpoint does not downgrade"
    )
    assert _version(empty_db_url) == [(OLDER,)]

    same = cli(tmp_path, empty_db_url, "db", "upgrade", OLDER)
    assert_ok(same)
    assert same.stderr == f"database already at revision {OLDER}; nothing to do\n"

    latest = cli(tmp_path, empty_db_url, "db", "upgrade")
    assert_ok(latest)
    assert latest.stderr == f"database upgraded from {OLDER} to revision {HEAD} (head)\n"
    assert _version(empty_db_url) == [(HEAD,)]
    at_head = cli(tmp_path, empty_db_url, "db", "current")
    assert (at_head.stdout, at_head.stderr) == (f"{HEAD}\n", "note: the latest revision (head)\n")


def test_db_upgrade_to_an_unknown_revision_names_it_and_the_known_ones(
    empty_db_url: str, tmp_path: Path
) -> None:
    result = cli(tmp_path, empty_db_url, "db", "upgrade", "9abc")
    line = one_line_error(result)
    assert line == f"error: unknown revision '9abc'; known: {', '.join(SHIPPED)} (or head)"
    assert not (tmp_path / "fresh.db").exists()


def test_db_commands_on_a_database_from_a_newer_release_say_so(db_url: str, tmp_path: Path) -> None:
    execute_sql(db_url, "UPDATE alembic_version SET version_num = '9999'")
    current = cli(tmp_path, db_url, "db", "current")
    assert_ok(current)
    assert current.stdout == "9999\n"
    assert "which this reviewpoint does not know" in current.stderr
    upgrade = cli(tmp_path, db_url, "db", "upgrade")
    assert "revision 9999, which this reviewpoint does not know" in one_line_error(upgrade)
    assert _version(db_url) == [("9999",)]


def test_db_history_lists_every_revision_with_its_message_and_marks_the_current_one(
    empty_db_url: str, tmp_path: Path
) -> None:
    assert_ok(cli(tmp_path, empty_db_url, "db", "upgrade", OLDER))
    as_json = cli(tmp_path, empty_db_url, "db", "history", "--json")
    assert_ok(as_json)
    assert json.loads(as_json.stdout) == [
        {
            "revision": known.revision,
            "down_revision": known.down_revision,
            "message": known.message,
            "head": known.revision == HEAD,
            "current": known.revision == OLDER,
        }
        for known in revisions()
    ]

    table = cli(tmp_path, empty_db_url, "db", "history", env={"COLUMNS": "80"})
    assert_ok(table)
    assert_fits(table.stdout)
    text = " ".join(table.stdout.split())
    assert f"{OLDER} (current)" in text
    assert f"{HEAD} (head)" in text
    for known in revisions():
        assert " ".join(known.message.split()) in text


def test_db_history_before_the_first_upgrade_lists_revisions_and_says_to_upgrade(
    empty_db_url: str, tmp_path: Path
) -> None:
    result = cli(tmp_path, empty_db_url, "db", "history", "--json")
    assert_ok(result)
    assert [view["current"] for view in json.loads(result.stdout)] == [False] * len(SHIPPED)
    assert "run `reviewpoint db upgrade`" in result.stderr
