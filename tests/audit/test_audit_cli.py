"""`reviewpoint audit list|prune`, run as an operator runs them: subprocesses on a real database."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reviewpoint.audit.service import INTERRUPTED, STALE_MARGIN
from reviewpoint.config import Settings
from reviewpoint.db import utcnow
from tests.audit.records import AUDIT, add_record, audit_rows, key_actor, user_actor
from tests.data import admin_headers, execute_sql
from tests.test_cli import assert_ok, cli, one_line_error


def _listed_ids(stdout: str) -> list[int]:
    """The id column of `audit list`'s table (the rows under the header's rule)."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    return [int(line.split()[0]) for line in lines[rule + 1 :] if line.strip()]


def test_audit_list_prints_a_table_newest_first_that_fits_80_columns(
    db_url: str, tmp_path: Path
) -> None:
    now = utcnow()
    ids = [
        add_record(db_url, started_at=now - timedelta(minutes=3), actor=user_actor(12)),
        add_record(
            db_url,
            started_at=now - timedelta(minutes=2),
            actor=key_actor(123_456, name="a key with a rather long name indeed"),
            rows=9_999_999,
        ),
        add_record(db_url, started_at=now - timedelta(minutes=1), outcome="denied", status=401),
    ]
    result = cli(tmp_path, db_url, "audit", "list")
    assert_ok(result)
    assert _listed_ids(result.stdout) == ids[::-1]
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    assert "api_key:123456" in result.stdout
    assert "9999999" in result.stdout
    assert "3 of 3" in result.stderr


def test_audit_list_json_is_what_the_http_api_shows(
    client: TestClient, db_url: str, tmp_path: Path
) -> None:
    now = utcnow()
    for minutes in range(3):
        add_record(db_url, started_at=now - timedelta(minutes=minutes), actor=key_actor(5))
    add_record(db_url, started_at=now, outcome="invalid", status=400)

    result = cli(tmp_path, db_url, "audit", "list", "--json", "--limit", "3")
    assert_ok(result)
    listed = json.loads(result.stdout)
    shown = client.get(AUDIT, params={"limit": 3}, headers=admin_headers(client, db_url)).json()
    assert listed == shown["data"]
    assert all(item["started_at"].endswith("Z") for item in listed)
    assert "3 of 4" in result.stderr


def test_audit_list_filters_like_the_api(db_url: str, tmp_path: Path) -> None:
    now = utcnow()
    old_denied = add_record(
        db_url, started_at=now - timedelta(days=2), outcome="denied", status=403
    )
    denied = add_record(db_url, started_at=now - timedelta(hours=1), outcome="denied", status=403)
    by_key = add_record(db_url, started_at=now - timedelta(hours=1), actor=key_actor(9))
    newest = add_record(db_url, started_at=now, actor=key_actor(9))

    def ids(*options: str) -> list[int]:
        result = cli(tmp_path, db_url, "audit", "list", "--json", *options)
        assert_ok(result)
        return [item["id"] for item in json.loads(result.stdout)]

    assert ids("--outcome", "denied") == [denied, old_denied]
    since = (now - timedelta(days=1)).isoformat()
    assert ids("--outcome", "denied", "--since", since) == [denied]
    assert ids("--actor", "api_key:9") == [newest, by_key]
    assert ids("--actor", "user:9") == []
    assert ids("--limit", "1") == [newest]


def test_audit_list_with_no_records_prints_an_empty_array_or_nothing(
    db_url: str, tmp_path: Path
) -> None:
    as_json = cli(tmp_path, db_url, "audit", "list", "--json")
    assert_ok(as_json)
    assert json.loads(as_json.stdout) == []
    table = cli(tmp_path, db_url, "audit", "list")
    assert_ok(table)
    assert table.stdout == ""
    assert "0 of 0" in table.stderr


def test_audit_prune_removes_records_past_the_retention(db_url: str, tmp_path: Path) -> None:
    now = utcnow()
    ancient = add_record(db_url, started_at=now - timedelta(days=400))
    old = add_record(db_url, started_at=now - timedelta(days=300))
    recent = add_record(db_url, started_at=now - timedelta(days=20))
    today = add_record(db_url, started_at=now)

    def remaining() -> list[int]:
        return [row["id"] for row in audit_rows(db_url)]

    default = cli(tmp_path, db_url, "audit", "prune")
    assert_ok(default)
    assert "removed 1 audit record(s) older than 365 day(s)" in default.stderr
    assert remaining() == [old, recent, today]

    configured = cli(
        tmp_path, db_url, "audit", "prune", env={"REVIEWPOINT_AUDIT_RETENTION_DAYS": "200"}
    )
    assert_ok(configured)
    assert "removed 1 audit record(s) older than 200 day(s)" in configured.stderr
    assert remaining() == [recent, today]

    given = cli(tmp_path, db_url, "audit", "prune", "--older-than-days", "7")
    assert_ok(given)
    assert "removed 1 audit record(s) older than 7 day(s)" in given.stderr
    assert remaining() == [today]
    assert ancient not in remaining()


def test_audit_prune_marks_exports_a_stopped_server_left_running_as_failed(
    db_url: str, tmp_path: Path, settings: Settings
) -> None:
    longest = timedelta(seconds=settings.export_max_seconds) + STALE_MARGIN
    now = utcnow()
    stale = add_record(db_url, started_at=now - longest - timedelta(minutes=5), outcome="running")
    live = add_record(db_url, started_at=now - timedelta(minutes=5), outcome="running")

    result = cli(tmp_path, db_url, "audit", "prune")
    assert_ok(result)
    assert "marked 1 interrupted export(s) as failed" in result.stderr
    rows = {row["id"]: row for row in audit_rows(db_url)}
    assert (rows[stale]["outcome"], rows[stale]["detail"]) == ("failed", INTERRUPTED)
    assert rows[live]["outcome"] == "running"


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["list", "--since", "2026-11-20T12:00:00"], "--since"),
        (["list", "--since", "yesterday"], "--since"),
        (["list", "--outcome", "done"], "--outcome"),
        (["list", "--actor", "user:x"], "--actor"),
        (["list", "--limit", "0"], "--limit"),
        (["prune", "--older-than-days", "0"], "--older-than-days"),
    ],
)
def test_audit_commands_refuse_bad_options_in_one_line(
    tmp_path: Path, arguments: list[str], named: str
) -> None:
    line = one_line_error(cli(tmp_path, None, "audit", *arguments))
    assert named in line


def test_a_retention_under_a_day_is_refused_in_one_line(db_url: str, tmp_path: Path) -> None:
    result = cli(tmp_path, db_url, "audit", "prune", env={"REVIEWPOINT_AUDIT_RETENTION_DAYS": "0"})
    assert "REVIEWPOINT_AUDIT_RETENTION_DAYS" in one_line_error(result)


@pytest.mark.parametrize("command", ["list", "prune"])
def test_audit_commands_without_the_audit_table_fail_in_one_line(
    db_url: str, tmp_path: Path, command: str
) -> None:
    execute_sql(db_url, "DROP TABLE export_audit")
    line = one_line_error(cli(tmp_path, db_url, "audit", command))
    assert "export_audit" in line
    assert line.endswith("run `reviewpoint db upgrade`")


def test_audit_list_json_shows_the_fields_delivered_and_their_anonymization(
    db_url: str, tmp_path: Path
) -> None:
    add_record(db_url, started_at=utcnow(), fields=("id", "name"), anonymized="day")
    result = cli(tmp_path, db_url, "audit", "list", "--json")
    assert_ok(result)
    (record,) = json.loads(result.stdout)
    assert (record["fields"], record["anonymized"]) == (["id", "name"], "day")
