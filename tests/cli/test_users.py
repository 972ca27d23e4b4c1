"""`reviewpoint users list|deactivate|delete`: the users service the HTTP API uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from tests.cli.runner import assert_fits, assert_ok, cli, one_line_error, sql_rows
from tests.data import (
    BULK_PASSWORD,
    USER_PUBLIC_FIELDS,
    bearer_headers,
    insert_user,
    insert_users,
    login,
)

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _can_log_in(client: TestClient, email: str) -> bool:
    response = client.post(
        "/api/v1/auth/login", data={"username": email, "password": BULK_PASSWORD}
    )
    return response.status_code == 200


# list


def test_users_list_json_is_what_the_http_api_lists(
    db_url: str, client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    admin_id = insert_user(db_url, "admin@example.com", name="Admin", is_admin=True)
    insert_user(db_url, "gone@example.com", is_deleted=True)
    insert_users(db_url, [("ann@example.com", "Ann"), ("bob@example.com", None)])
    login(client, "ann@example.com", BULK_PASSWORD)  # so one user has a last login
    over_http = client.get("/api/v1/users", headers=bearer_headers(settings, admin_id)).json()

    result = cli(tmp_path, db_url, "users", "list", "--json")
    assert_ok(result)
    listed = json.loads(result.stdout)
    assert listed == over_http["data"]
    assert [user["email"] for user in listed] == [
        "admin@example.com",
        "ann@example.com",
        "bob@example.com",
    ]
    assert all(set(user) == USER_PUBLIC_FIELDS for user in listed)
    assert str(listed[1]["last_login_at"]).endswith("Z")
    assert result.stderr == "users 1-3 of 3\n"


def test_users_list_pages_with_limit_and_offset_and_says_how_many_in_all(
    db_url: str, tmp_path: Path
) -> None:
    insert_users(db_url, [(f"user{n}@example.com", f"User {n}") for n in range(1, 8)])
    result = cli(tmp_path, db_url, "users", "list", "--json", "--limit", "3", "--offset", "2")
    assert_ok(result)
    assert [user["email"] for user in json.loads(result.stdout)] == [
        "user3@example.com",
        "user4@example.com",
        "user5@example.com",
    ]
    assert result.stderr == "users 3-5 of 7\n"
    beyond = cli(tmp_path, db_url, "users", "list", "--json", "--offset", "50")
    assert_ok(beyond)
    assert (json.loads(beyond.stdout), beyond.stderr) == ([], "users none of 7\n")


def test_users_list_email_matches_as_logins_do(db_url: str, tmp_path: Path) -> None:
    insert_users(db_url, [("Ops.Admin@example.com", "Ops"), ("ops.admin2@example.com", None)])
    result = cli(tmp_path, db_url, "users", "list", "--json", "--email", "OPS.ADMIN@example.com")
    assert_ok(result)
    assert [user["email"] for user in json.loads(result.stdout)] == ["Ops.Admin@example.com"]
    assert result.stderr == "users 1-1 of 1\n"


@SQLITE_ONLY
@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--limit", "0"], id="limit-zero"),
        pytest.param(["--limit", "1001"], id="limit-over-1000"),
        pytest.param(["--offset", "-1"], id="negative-offset"),
    ],
)
def test_users_list_refuses_what_the_http_api_refuses(
    db_url: str, tmp_path: Path, options: list[str]
) -> None:
    assert options[0] in one_line_error(cli(tmp_path, db_url, "users", "list", *options))


def test_users_list_table_fits_80_columns_with_every_address_whole(
    db_url: str, tmp_path: Path
) -> None:
    emails = [
        "a.very.long.address.for.a.person.in.finance@subsidiary.example.com",
        "short@example.com",
    ]
    insert_users(db_url, [(emails[0], "A Name Long Enough To Wrap Somewhere"), (emails[1], None)])
    narrow = cli(tmp_path, db_url, "users", "list", env={"COLUMNS": "80"})
    assert_ok(narrow)
    assert_fits(narrow.stdout)
    assert "…" not in narrow.stdout
    # Piped without COLUMNS, a row is one line: every address stands whole.
    wide = cli(tmp_path, db_url, "users", "list")
    assert_ok(wide)
    rows = wide.stdout.splitlines()[2:]
    assert [row.split()[:2] for row in rows] == [["1", emails[0]], ["2", emails[1]]]
    # active, admin, created (date and time), last login
    assert rows[0].split()[-5:-3] == ["yes", "no"]
    assert rows[0].split()[-1] == "-"


# deactivate


def test_users_deactivate_stops_logins_and_says_so(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    insert_user(db_url, "admin@example.com", is_admin=True)
    user_id = insert_user(db_url, "leaver@example.com")
    assert _can_log_in(client, "leaver@example.com")
    result = cli(tmp_path, db_url, "users", "deactivate", str(user_id))
    assert_ok(result)
    assert result.stdout == ""
    assert result.stderr == f"deactivated user {user_id} <leaver@example.com>\n"
    assert not _can_log_in(client, "leaver@example.com")

    again = cli(tmp_path, db_url, "users", "deactivate", str(user_id))
    assert_ok(again)
    assert again.stderr == f"user {user_id} <leaver@example.com> was already inactive\n"


def test_users_deactivate_refuses_the_last_active_admin(db_url: str, tmp_path: Path) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    insert_user(db_url, "former.admin@example.com", is_admin=True, is_active=False)
    result = cli(tmp_path, db_url, "users", "deactivate", str(admin_id))
    assert result.returncode == 1
    assert one_line_error(result) == "error: At least one active administrator must remain"
    assert sql_rows(db_url, "SELECT is_active FROM users WHERE id = :id", id=admin_id) == [(True,)]


def test_users_deactivate_an_unknown_user_fails_in_one_line(db_url: str, tmp_path: Path) -> None:
    result = cli(tmp_path, db_url, "users", "deactivate", "4242")
    assert one_line_error(result) == "error: User not found"


# delete


def test_users_delete_soft_deletes_the_user_everywhere(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    insert_user(db_url, "admin@example.com", is_admin=True)
    user_id = insert_user(db_url, "leaver@example.com")
    result = cli(tmp_path, db_url, "users", "delete", str(user_id))
    assert_ok(result)
    assert result.stderr == f"deleted user {user_id} <leaver@example.com>\n"
    # The row stays for audits, marked deleted.
    assert sql_rows(
        db_url, "SELECT is_deleted, is_active FROM users WHERE id = :id", id=user_id
    ) == [(True, False)]
    assert not _can_log_in(client, "leaver@example.com")
    listed = cli(tmp_path, db_url, "users", "list", "--json")
    assert [user["email"] for user in json.loads(listed.stdout)] == ["admin@example.com"]

    again = cli(tmp_path, db_url, "users", "delete", str(user_id))
    assert one_line_error(again) == "error: User not found"


def test_users_delete_refuses_the_last_active_admin(db_url: str, tmp_path: Path) -> None:
    admin_id = insert_user(db_url, "admin@example.com", is_admin=True)
    result = cli(tmp_path, db_url, "users", "delete", str(admin_id))
    assert one_line_error(result) == "error: At least one active administrator must remain"
    assert sql_rows(db_url, "SELECT is_deleted FROM users WHERE id = :id", id=admin_id) == [
        (False,)
    ]


@SQLITE_ONLY
@pytest.mark.parametrize("command", ["deactivate", "delete"])
@pytest.mark.parametrize("value", ["0", "2147483648", "first"])
def test_users_commands_refuse_an_id_the_api_would_refuse(
    db_url: str, tmp_path: Path, command: str, value: str
) -> None:
    assert "ID" in one_line_error(cli(tmp_path, db_url, "users", command, value))
