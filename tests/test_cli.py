"""The `reviewpoint` command, run as an operator runs it: a subprocess on a real database.

Every command gets a clean environment (no `REVIEWPOINT_*` but the database URL) and
runs in the test's empty temporary directory, so neither the developer's shell nor a
`.env` leaks in. What a command did is checked in the database with SQL or the app's own
models, and through the HTTP API of an app built on the same database.
"""

from __future__ import annotations

import asyncio
import csv
import fcntl
import hashlib
import io
import json
import os
import pty
import re
import select as fd_select
import socket
import stat
import subprocess
import termios
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select

from reviewpoint.api_keys.models import ApiKey
from reviewpoint.cli.console import without_password as _without_password
from reviewpoint.cli.demo import DEMO_ADMIN_EMAIL, DEMO_USERS
from reviewpoint.db import create_engine, standalone_session
from reviewpoint.migrations import alembic_config
from tests.cli.runner import (
    REVIEWPOINT,
    TIMEOUT,
    assert_ok,
    cli,
    one_line_error,
    sql_rows,
)
from tests.cli.runner import environment as _environment
from tests.conftest import served_process
from tests.data import BULK_PASSWORD, create_api_key, insert_user, login

EXPORT_FULL = "/api/v1/users/export-full"
EXPORT = "/api/v1/users/export"
FULL_HEADER = "id,email,name,created_at,updated_at,is_active,is_admin"
SECRET_FORMAT = re.compile(r"rvp_([0-9a-f]{12})_[0-9A-Za-z]{43}")
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def table_names(db_url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def stored_key(db_url: str, prefix: str) -> ApiKey:
    async def run() -> ApiKey:
        async with standalone_session(db_url) as session:
            key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
            assert key is not None, f"no API key with prefix {prefix}"
            return key

    return asyncio.run(run())


def csv_records(body: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body, newline="")))


# db upgrade


def test_db_upgrade_creates_the_schema_and_running_it_again_changes_nothing(
    empty_db_url: str, tmp_path: Path
) -> None:
    head = ScriptDirectory.from_config(alembic_config(empty_db_url)).get_current_head()

    first = cli(tmp_path, empty_db_url, "db", "upgrade")
    assert_ok(first)
    assert first.stdout == ""
    assert {"users", "api_keys", "alembic_version"} <= table_names(empty_db_url)
    assert sql_rows(empty_db_url, "SELECT version_num FROM alembic_version") == [(head,)]

    again = cli(tmp_path, empty_db_url, "db", "upgrade")
    assert_ok(again)
    assert sql_rows(empty_db_url, "SELECT version_num FROM alembic_version") == [(head,)]
    assert sql_rows(empty_db_url, "SELECT count(*) FROM users") == [(0,)]


def test_commands_on_a_database_never_upgraded_fail_in_one_line(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'never-upgraded.db'}"
    result = cli(tmp_path, db_url, "api-keys", "list")
    line = one_line_error(result)
    assert "run `reviewpoint db upgrade`" in line
    assert "api_keys" in line


# users create


def test_users_create_stores_an_admin_who_can_log_in_and_a_plain_user(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    admin = cli(
        tmp_path,
        db_url,
        "users",
        "create",
        "--email",
        "Ops.Admin@example.com",
        "--name",
        'Ops, "the" Admin',
        "--password",
        "s3cret-pass",
        "--admin",
    )
    assert_ok(admin)
    assert admin.stdout == ""
    assert "Ops.Admin@example.com" in admin.stderr
    plain = cli(
        tmp_path,
        db_url,
        "users",
        "create",
        "--email",
        "analyst@example.com",
        "--name",
        "Analyst",
        "--password",
        "another-pass",
    )
    assert_ok(plain)

    rows = sql_rows(
        db_url,
        "SELECT email, name, is_admin, is_active, is_deleted, hashed_password "
        "FROM users ORDER BY id",
    )
    assert [tuple(bool(v) if isinstance(v, int) else v for v in row[:5]) for row in rows] == [
        ("Ops.Admin@example.com", 'Ops, "the" Admin', True, True, False),
        ("analyst@example.com", "Analyst", False, True, False),
    ]
    assert all(row[5].startswith("$argon2id$") for row in rows)
    assert "s3cret-pass" not in rows[0][5]

    headers = login(client, "Ops.Admin@example.com", "s3cret-pass")
    listed = client.get("/api/v1/users", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [user["email"] for user in listed.json()["data"]] == [
        "Ops.Admin@example.com",
        "analyst@example.com",
    ]


def test_users_create_with_a_taken_email_fails_in_one_line(db_url: str, tmp_path: Path) -> None:
    insert_user(db_url, "taken@example.com", name="First")
    result = cli(
        tmp_path,
        db_url,
        "users",
        "create",
        "--email",
        "TAKEN@example.com",
        "--name",
        "Second",
        "--password",
        "long-enough-1",
    )
    assert result.returncode == 1
    assert "already exists" in one_line_error(result)
    assert sql_rows(db_url, "SELECT email, name FROM users") == [("taken@example.com", "First")]


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        pytest.param("not-an-email", "long-enough-1", "email", id="bad-email"),
        pytest.param("short@example.com", "pw-7chr", "password", id="short-password"),
    ],
)
def test_users_create_with_invalid_input_fails_in_one_line_before_touching_the_database(
    tmp_path: Path, email: str, password: str, field: str
) -> None:
    database = tmp_path / "untouched.db"
    result = cli(
        tmp_path,
        f"sqlite+aiosqlite:///{database}",
        "users",
        "create",
        "--email",
        email,
        "--name",
        "N",
        "--password",
        password,
    )
    line = one_line_error(result)
    assert "invalid input" in line
    assert f"{field}:" in line
    assert password not in line
    assert not database.exists()


def _can_log_in(client: TestClient, email: str, password: str) -> bool:
    response = client.post("/api/v1/auth/login", data={"username": email, "password": password})
    return response.status_code == 200


def test_users_create_reads_the_password_from_stdin(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    args = ("users", "create", "--email", "piped@example.com", "--password-stdin")
    result = cli(tmp_path, db_url, *args, input="from a pipe, with spaces \n")
    assert_ok(result)
    assert "from a pipe" not in result.stdout + result.stderr
    # Only the final line break is dropped: the password is what was piped.
    assert _can_log_in(client, "piped@example.com", "from a pipe, with spaces ")


def _tty_session() -> None:
    # The pseudo-terminal on stdin becomes the controlling terminal, as in a shell:
    # getpass reads /dev/tty, so the test's own terminal (if any) is never touched.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _run_on_a_terminal(cwd: Path, db_url: str, args: list[str], answers: list[str]) -> str:
    """The command on a pseudo-terminal, typing each answer after the next `: ` prompt."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [REVIEWPOINT, *args],
        env=_environment(db_url),
        cwd=cwd,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
        preexec_fn=_tty_session,
    )
    os.close(follower)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = fd_select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the command closed the terminal and ended
                    break
                if not chunk:
                    break
                seen += chunk
                # getpass writes the prompt's final space only after switching echo
                # off (and flushing pending input): type after it, not before.
                if pending and seen.endswith(b": "):
                    seen += b"<typed>"
                    os.write(leader, pending.pop(0).encode() + b"\n")
            elif process.poll() is not None:
                break
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    assert process.returncode == 0, seen.decode(errors="replace")
    assert not pending, seen.decode(errors="replace")
    return seen.decode(errors="replace")


def test_users_create_prompts_twice_for_a_hidden_password_on_a_terminal(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    args = ["users", "create", "--email", "typed@example.com", "--admin"]
    transcript = _run_on_a_terminal(tmp_path, db_url, args, ["typed-secret-1"] * 2)
    assert "Password:" in transcript
    assert "Repeat for confirmation:" in transcript
    assert "typed-secret-1" not in transcript  # never echoed
    assert _can_log_in(client, "typed@example.com", "typed-secret-1")


def test_users_create_without_a_password_or_terminal_fails_in_one_line(
    db_url: str, tmp_path: Path
) -> None:
    result = cli(tmp_path, db_url, "users", "create", "--email", "nobody@example.com")
    assert "--password-stdin" in one_line_error(result)
    assert sql_rows(db_url, "SELECT count(*) FROM users") == [(0,)]


@SQLITE_ONLY
def test_users_create_refuses_two_passwords(db_url: str, tmp_path: Path) -> None:
    args = ("users", "create", "--email", "two@example.com", "--password", "long-enough-1")
    result = cli(tmp_path, db_url, *args, "--password-stdin", input="long-enough-2\n")
    assert "not both" in one_line_error(result)
    assert sql_rows(db_url, "SELECT count(*) FROM users") == [(0,)]


def test_users_create_help_warns_about_passwords_on_the_command_line(tmp_path: Path) -> None:
    result = cli(tmp_path, None, "users", "create", "--help", env={"COLUMNS": "200"})
    assert_ok(result)
    help_text = " ".join(re.sub(r"[│]", " ", result.stdout).split())
    assert "shell history" in help_text
    assert "process list" in help_text
    assert "--password-stdin" in help_text


# api-keys


def test_api_key_lifecycle_create_use_list_revoke(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    created = cli(
        tmp_path,
        db_url,
        "api-keys",
        "create",
        "--name",
        "nightly sync",
        "--scope",
        "users:export_full",
        "--expires-in-days",
        "30",
    )
    assert_ok(created)
    # The secret alone on stdout, so `KEY=$(reviewpoint api-keys create ...)` works.
    lines = created.stdout.splitlines()
    assert len(lines) == 1, created.stdout
    secret = lines[0]
    match = SECRET_FORMAT.fullmatch(secret)
    assert match, secret
    prefix = match.group(1)
    assert "store it now" in created.stderr
    assert "users:export_full" in created.stderr
    assert secret not in created.stderr

    key = stored_key(db_url, prefix)
    assert key.name == "nightly sync"
    assert key.scopes == "users:export_full"
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.expires_at is not None
    assert key.expires_at - key.created_at == timedelta(days=30)
    assert key.revoked_at is None

    exported = client.get(EXPORT_FULL, headers={"X-API-Key": secret})
    assert exported.status_code == 200, exported.text
    assert exported.text.splitlines()[0] == FULL_HEADER

    listing = cli(tmp_path, db_url, "api-keys", "list", "--json")
    assert_ok(listing)
    assert secret not in listing.stdout + listing.stderr
    assert secret.rsplit("_", 1)[1] not in listing.stdout
    [listed] = json.loads(listing.stdout)
    key_id = str(listed["id"])
    assert listed["id"] == key.id
    assert (listed["prefix"], listed["name"], listed["scopes"], listed["revoked_at"]) == (
        prefix,
        "nightly sync",
        ["users:export_full"],
        None,
    )
    assert listed["last_used_at"] is not None  # the export above was recorded
    assert datetime.fromisoformat(listed["expires_at"]) == key.expires_at
    assert datetime.fromisoformat(listed["created_at"]) == key.created_at

    revoked_run = cli(tmp_path, db_url, "api-keys", "revoke", key_id)
    assert_ok(revoked_run)
    assert revoked_run.stdout == ""
    assert f"revoked API key {key_id}" in revoked_run.stderr
    assert stored_key(db_url, prefix).revoked_at is not None
    refused = client.get(EXPORT_FULL, headers={"X-API-Key": secret})
    assert refused.status_code == 401
    assert "WWW-Authenticate" in refused.headers

    unknown = cli(tmp_path, db_url, "api-keys", "revoke", str(key.id + 1000))
    assert unknown.returncode == 1
    assert "not found" in one_line_error(unknown).lower()


def test_api_key_scope_given_on_the_command_line_limits_the_key(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    created = cli(
        tmp_path, db_url, "api-keys", "create", "--name", "minimal", "--scope", "users:export"
    )
    assert_ok(created)
    secret = created.stdout.strip()
    match = SECRET_FORMAT.fullmatch(secret)
    assert match, created.stdout
    key = stored_key(db_url, match.group(1))
    assert (key.scopes, key.expires_at) == ("users:export", None)
    assert client.get(EXPORT, headers={"X-API-Key": secret}).status_code == 200
    assert client.get(EXPORT_FULL, headers={"X-API-Key": secret}).status_code == 403


def test_api_keys_create_with_an_unknown_scope_fails_in_one_line_and_prints_no_secret(
    tmp_path: Path,
) -> None:
    database = tmp_path / "untouched.db"
    result = cli(
        tmp_path,
        f"sqlite+aiosqlite:///{database}",
        "api-keys",
        "create",
        "--name",
        "oops",
        "--scope",
        "users:delete_all",
    )
    line = one_line_error(result)
    assert "users:delete_all" in line
    assert "users:export_full" in line  # names the valid choices
    assert "rvp_" not in result.stdout + result.stderr
    assert not database.exists()


@SQLITE_ONLY
def test_api_key_names_with_brackets_are_printed_as_written(db_url: str, tmp_path: Path) -> None:
    name = "[/x] nightly [bold]sync[/bold]"
    created = cli(tmp_path, db_url, "api-keys", "create", "--name", name, "--scope", "users:export")
    assert_ok(created)
    assert SECRET_FORMAT.fullmatch(created.stdout.strip()), created.stdout
    assert name in created.stderr
    listing = cli(tmp_path, db_url, "api-keys", "list")
    assert_ok(listing)
    assert name in listing.stdout  # piped, each row is one line, with the name as written


@SQLITE_ONLY
@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--name", "n" * 129], id="name-over-128"),
        pytest.param(["--name", "far", "--expires-in-days", "3000000"], id="expiry-overflow"),
    ],
)
def test_api_keys_create_refuses_what_the_http_api_refuses(
    db_url: str, tmp_path: Path, options: list[str]
) -> None:
    result = cli(tmp_path, db_url, "api-keys", "create", *options, "--scope", "users:export")
    one_line_error(result)
    assert sql_rows(db_url, "SELECT count(*) FROM api_keys") == [(0,)]


def test_a_bad_option_value_fails_in_one_line(tmp_path: Path) -> None:
    result = cli(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", "api-keys", "revoke", "first"
    )
    assert "ID" in one_line_error(result)


# seed


def test_seed_adds_the_requested_users_each_run(
    db_url: str, client: TestClient, tmp_path: Path
) -> None:
    existing = insert_user(db_url, "existing@example.com", name="Existing")
    for _ in range(2):
        result = cli(tmp_path, db_url, "seed", "--users", "1500")
        assert_ok(result)
        assert result.stdout == ""
        assert "added 1500 users" in result.stderr

    assert sql_rows(db_url, "SELECT count(*), count(DISTINCT lower(email)) FROM users") == [
        (3001, 3001)
    ]
    assert sql_rows(db_url, "SELECT id, email, name FROM users WHERE id = :id", id=existing) == [
        (existing, "existing@example.com", "Existing")
    ]
    _, secret = create_api_key(db_url, ["users:export_full"])
    exported = client.get(EXPORT_FULL, headers={"X-API-Key": secret})
    assert exported.status_code == 200
    records = csv_records(exported.text)
    assert records[0] == FULL_HEADER.split(",")
    ids = [int(record[0]) for record in records[1:]]
    assert len(ids) == 3001
    assert ids == sorted(set(ids))
    assert existing in ids


# demo


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    """A `reviewpoint` server command as a subprocess on a free port; always stopped on exit.

    `demo` by default, on the default database of `cwd` unless `db_url` is given.
    """

    def __init__(
        self,
        cwd: Path,
        run: str,
        db_url: str | None = None,
        command: tuple[str, ...] = ("demo",),
        **env: str,
    ) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stdout_path = cwd / f"demo-{run}.out"
        self.stderr_path = cwd / f"demo-{run}.err"
        self.cwd = cwd
        self.args = [*command, "--host", "127.0.0.1", "--port", str(self.port)]
        self.env = _environment(db_url, REVIEWPOINT_LOG_LEVEL="warning", **env)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Demo:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [REVIEWPOINT, *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=err,
            )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"demo exited with {self.process.returncode}: {self.stderr}")
            try:
                if httpx.get(f"{self.base}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"demo did not answer on {self.base} within 30 s: {self.stderr}")

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def printed(self, pattern: str) -> str:
        match = re.search(pattern, self.stdout)
        assert match, self.stdout
        return match.group(1)


@pytest.mark.parametrize(
    ("url", "printed"),
    [
        pytest.param(
            "postgresql+asyncpg://rvp:s3cret@db.internal:5432/rvp",
            "postgresql+asyncpg://rvp:***@db.internal:5432/rvp",
            id="password-masked",
        ),
        pytest.param(
            "sqlite+aiosqlite:///./reviewpoint.db",
            "sqlite+aiosqlite:///./reviewpoint.db",
            id="no-password",
        ),
    ],
)
def test_demo_prints_the_database_url_without_its_password(url: str, printed: str) -> None:
    assert _without_password(url) == printed


def _demo_login(demo: Demo, password: str) -> httpx.Response:
    return httpx.post(
        f"{demo.base}/api/v1/auth/login",
        data={"username": DEMO_ADMIN_EMAIL, "password": password},
        timeout=30,
    )


def test_demo_serves_every_demo_user_to_the_printed_key_and_curl_line(tmp_path: Path) -> None:
    expected_emails = {DEMO_ADMIN_EMAIL, *(email for email, _ in DEMO_USERS)}
    with Demo(tmp_path, "first") as demo:
        key = demo.printed(r"export API key:\s+(\S+)")
        assert SECRET_FORMAT.fullmatch(key), key
        password = demo.printed(rf"admin login:\s+{re.escape(DEMO_ADMIN_EMAIL)} / (\S+)")
        curl_key, url = re.findall(r'curl -H "X-API-Key: (\S+)" (\S+)', demo.stdout)[0]
        assert (curl_key, url) == (key, f"{demo.base}{EXPORT_FULL}")

        response = httpx.get(url, headers={"X-API-Key": key}, timeout=30)
        assert response.status_code == 200, response.text
        records = csv_records(response.text)
        assert records[0] == FULL_HEADER.split(",")
        assert sorted(record[1] for record in records[1:]) == sorted(expected_emails)
        names = {record[1]: record[2] for record in records[1:]}
        assert names["comma@example.com"] == "Doe, John"
        assert names["multi.line@example.com"] == "First line\nSecond line"
        assert names["formula@example.com"].startswith("'=HYPERLINK(")
        assert _demo_login(demo, password).status_code == 200
        console = demo.printed(r"console:\s+(\S+)")
        assert console == f"{demo.base}/console"
        sign_in = httpx.get(console, follow_redirects=True, timeout=30)
        assert sign_in.status_code == 200
        assert str(sign_in.url) == f"{demo.base}/console/sign-in"
    # The default database and the credentials, in the working directory the demo ran in.
    assert (tmp_path / "reviewpoint.db").exists()
    state = tmp_path / ".reviewpoint" / "demo.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    stored = json.loads(state.read_text())["databases"]["sqlite+aiosqlite:///./reviewpoint.db"]
    assert stored == {"admin_password": password, "api_key": key}


def test_a_second_demo_run_reprints_the_same_credentials_and_keeps_tokens_valid(
    db_url: str, tmp_path: Path
) -> None:
    expected_emails = sorted({DEMO_ADMIN_EMAIL, *(email for email, _ in DEMO_USERS)})
    printed, tokens = [], []
    for run in ("first", "second"):
        with Demo(tmp_path, run, db_url) as demo:
            key = demo.printed(r"export API key:\s+(\S+)")
            password = demo.printed(rf"admin login:\s+{re.escape(DEMO_ADMIN_EMAIL)} / (\S+)")
            printed.append((password, key))
            token = _demo_login(demo, password)
            assert token.status_code == 200, token.text
            tokens.append(token.json()["access_token"])
            for earlier in tokens:  # the signing key is kept too: a restart logs no one out
                me = httpx.get(
                    f"{demo.base}/api/v1/auth/me",
                    headers={"Authorization": f"Bearer {earlier}"},
                    timeout=30,
                )
                assert me.status_code == 200, me.text
            export = httpx.get(f"{demo.base}{EXPORT_FULL}", headers={"X-API-Key": key}, timeout=30)
            assert export.status_code == 200, export.text
            # Every demo user, once: a second run adds no duplicates.
            assert sorted(r[1] for r in csv_records(export.text)[1:]) == expected_emails
    assert printed[0] == printed[1]
    assert sql_rows(db_url, "SELECT count(*) FROM api_keys") == [(1,)]


@SQLITE_ONLY
def test_demo_issues_a_new_key_when_the_stored_one_was_revoked(db_url: str, tmp_path: Path) -> None:
    with Demo(tmp_path, "first", db_url) as demo:
        first_key = demo.printed(r"export API key:\s+(\S+)")
        password = demo.printed(rf"admin login:\s+{re.escape(DEMO_ADMIN_EMAIL)} / (\S+)")
    match = SECRET_FORMAT.fullmatch(first_key)
    assert match, first_key
    assert_ok(cli(tmp_path, db_url, "api-keys", "revoke", str(stored_key(db_url, match[1]).id)))
    keys = []
    for run in ("second", "third"):
        with Demo(tmp_path, run, db_url) as demo:
            keys.append(demo.printed(r"export API key:\s+(\S+)"))
            assert _demo_login(demo, password).status_code == 200  # the password stays
            export = httpx.get(
                f"{demo.base}{EXPORT_FULL}", headers={"X-API-Key": keys[-1]}, timeout=30
            )
            assert export.status_code == 200, export.text
    assert keys[0] != first_key
    assert keys[0] == keys[1]  # issued once, then reprinted


def _demo_footprint(db_url: str, cwd: Path) -> tuple[object, ...]:
    """What a refused demo must leave as it was: users, their hashes, keys, the state file."""
    state = cwd / ".reviewpoint" / "demo.json"
    return (
        sql_rows(db_url, "SELECT id, email, hashed_password, is_deleted FROM users ORDER BY id"),
        sql_rows(db_url, "SELECT id, revoked_at FROM api_keys ORDER BY id"),
        state.read_bytes() if state.exists() else None,
    )


def test_demo_refuses_to_run_in_prod_and_touches_nothing(db_url: str, tmp_path: Path) -> None:
    before = _demo_footprint(db_url, tmp_path)
    result = cli(
        tmp_path,
        db_url,
        "demo",
        "--port",
        str(_free_port()),
        env={"REVIEWPOINT_ENV": "prod", "REVIEWPOINT_JWT_SECRET_KEY": "p" * 40},
    )
    assert "REVIEWPOINT_ENV=prod" in one_line_error(result)
    assert _demo_footprint(db_url, tmp_path) == before
    assert not (tmp_path / ".reviewpoint").exists()


@pytest.mark.parametrize("deleted", [False, True], ids=["live", "deleted"])
def test_demo_refuses_a_database_with_users_it_did_not_create(
    db_url: str, tmp_path: Path, deleted: bool
) -> None:
    insert_user(db_url, DEMO_USERS[0][0], name="A demo user")
    insert_user(db_url, "cfo@corp.example", name="Real Person", is_deleted=deleted)
    before = _demo_footprint(db_url, tmp_path)
    result = cli(tmp_path, db_url, "demo", "--port", str(_free_port()))
    line = one_line_error(result)
    assert "1 user(s) the demo did not create" in line
    assert "cfo@corp.example" not in line
    assert _demo_footprint(db_url, tmp_path) == before
    assert not (tmp_path / ".reviewpoint").exists()


@SQLITE_ONLY
def test_demo_refuses_an_admin_whose_password_it_does_not_know(db_url: str, tmp_path: Path) -> None:
    insert_user(db_url, DEMO_ADMIN_EMAIL, is_admin=True)
    before = _demo_footprint(db_url, tmp_path)
    result = cli(tmp_path, db_url, "demo", "--port", str(_free_port()))
    assert "password is not in" in one_line_error(result)
    assert _demo_footprint(db_url, tmp_path) == before


def test_demo_on_a_busy_port_refuses_before_changing_anything(db_url: str, tmp_path: Path) -> None:
    with Demo(tmp_path, "first", db_url) as demo:
        password = demo.printed(rf"admin login:\s+{re.escape(DEMO_ADMIN_EMAIL)} / (\S+)")
        before = _demo_footprint(db_url, tmp_path)
        again = cli(tmp_path, db_url, "demo", "--host", "127.0.0.1", "--port", str(demo.port))
        line = one_line_error(again)
        assert f"127.0.0.1:{demo.port}" in line
        assert "nothing was changed" in line
        assert _demo_footprint(db_url, tmp_path) == before
        assert _demo_login(demo, password).status_code == 200


# serve


def test_serve_without_a_secret_in_dev_signs_with_one_key_across_workers(
    db_url: str, tmp_path: Path
) -> None:
    insert_user(db_url, "admin@example.com", is_admin=True)
    # Logins are limited per worker (memory://): when one worker accepts nearly all
    # twelve connections, as it does on a busy machine, the default 10/minute refuses.
    with Demo(
        tmp_path,
        "serve",
        db_url,
        command=("serve", "--workers", "2"),
        REVIEWPOINT_ENV="dev",
        REVIEWPOINT_LOGIN_RATE_LIMIT="1000/minute",
    ) as server:
        # Fresh connections land on either worker: a token minted by one must pass
        # the other. With a key per worker about half of these would be refused.
        for _ in range(12):
            with httpx.Client(base_url=server.base, timeout=30) as first:
                token = first.post(
                    "/api/v1/auth/login",
                    data={"username": "admin@example.com", "password": BULK_PASSWORD},
                ).json()["access_token"]
            with httpx.Client(base_url=server.base, timeout=30) as second:
                me = second.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text
    assert "tokens are signed with a random key" in server.stderr
    assert "REVIEWPOINT_JWT_SECRET_KEY" not in server.env


@SQLITE_ONLY
@pytest.mark.parametrize("keep_alive", [1, 5])
@pytest.mark.timing
def test_serve_closes_an_idle_connection_after_the_keep_alive_setting(
    db_url: str, tmp_path: Path, keep_alive: int
) -> None:
    with served_process(db_url, tmp_path / "serve.log", keep_alive_seconds=str(keep_alive)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = connection.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            # Idle for 3 s: closed by then at 1 s, still open at 5 s.
            time.sleep(3)
            connection.settimeout(0.5)
            try:
                closed = connection.recv(1) == b""
            except TimeoutError:
                closed = False
        assert closed == (keep_alive < 3)
