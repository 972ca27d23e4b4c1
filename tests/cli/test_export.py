"""`reviewpoint export`: the HTTP export's body, written by the command line.

Each file the command writes is compared with the body the HTTP endpoint sends
for the same parameters over the same data. Most tests run the command in this
process (typer's runner: quick); those that need a real process (a terminal, a
signal, a database failing under it) run it as operators do.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import pty
import select
import signal
import subprocess
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openpyxl
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from reviewpoint.cli import app
from reviewpoint.cli.export import INTERRUPTED, READER_GONE, USER_AGENT
from reviewpoint.config import Settings
from reviewpoint.exports import cursor
from reviewpoint.main import create_app
from tests.cli.runner import REVIEWPOINT, TIMEOUT, environment, sql_rows
from tests.conftest import pg_execute
from tests.data import admin_headers, create_api_key, insert_user, insert_users

EXPORT = "/api/v1/users/export"
EXPORT_FULL = "/api/v1/users/export-full"
# Small chunks: every export below spans several queries (and connections on PostgreSQL).
CHUNK_ROWS = 7
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
# Names that test every format's escaping, the formula guard and Unicode.
NAMES = [
    None,
    "Doe, Jane",
    'Ann "Nancy" O\'Neil',
    "=HYPERLINK(1)",
    "-1+2",
    "@mention",
    "line\nbreak",
    "名前 🙂",
    "",
]
OLD = datetime(2024, 6, 1, 12, tzinfo=UTC)
NEW = datetime(2025, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The HTTP side chunked as the command is, without limits in the way of many exports."""
    return settings.model_copy(
        update={
            "export_chunk_rows": CHUNK_ROWS,
            "export_rate_limit": "10000/minute",
            "export_max_concurrent_per_credential": 10,
        }
    )


@pytest.fixture
def users(db_url: str) -> None:
    insert_users(
        db_url, [(f"old{i}@example.com", name) for i, name in enumerate(NAMES)], created_at=OLD
    )
    insert_users(
        db_url, [(f"new{i}@example.com", name) for i, name in enumerate(NAMES)], created_at=NEW
    )
    insert_user(db_url, "boss@example.com", name="Boss", is_admin=True)
    insert_user(db_url, "gone@example.com", name="Gone", is_active=False)
    insert_user(db_url, "deleted@example.com", name="Deleted", is_deleted=True)


@pytest.fixture
def key(db_url: str) -> dict[str, str]:
    # Identity: the raw body is the export itself, not a gzip of it.
    secret = create_api_key(db_url, ["users:export_full"])[1]
    return {"X-API-Key": secret, "Accept-Encoding": "identity"}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command's working directory, holding nothing but what it writes."""
    directory = tmp_path / "work"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def command(db_url: str, *args: str, settings: dict[str, str] | None = None) -> Result:
    """`reviewpoint ARGS` in this process, with no settings but the database's (and `settings`)."""
    env: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("REVIEWPOINT_")
    }
    env |= {"REVIEWPOINT_DB_URL": db_url, "REVIEWPOINT_EXPORT_CHUNK_ROWS": str(CHUNK_ROWS)}
    env |= settings or {}
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def export(db_url: str, *args: str, settings: dict[str, str] | None = None) -> Result:
    return command(db_url, "export", *args, settings=settings)


def http(client: TestClient, key: dict[str, str], path: str, **params: str) -> httpx.Response:
    response = client.get(path, params=params, headers=key)
    assert response.status_code == 200, response.text
    return response


def assert_exported(result: Result, response: httpx.Response) -> None:
    """The command succeeded, saying nothing but the cursor the HTTP export also gave."""
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"cursor: {response.headers[cursor.HEADER]}\n"


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0
    assert result.stdout_bytes == b""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def files(directory: Path) -> list[str]:
    """What a directory holds, hidden temporary files included."""
    return sorted(os.listdir(directory))


# Requests as HTTP query parameters; `options` spells each as the command's options.
CASES: dict[str, tuple[str, dict[str, str]]] = {
    "minimal-csv": (EXPORT, {}),
    "full-csv": (EXPORT_FULL, {}),
    "fields-ndjson": (
        EXPORT_FULL,
        {"format": "NDJSON", "fields": "email,id,last_login_at,is_deleted"},
    ),
    "filters-json": (
        EXPORT,
        {
            "format": "json",
            "is_active": "true",
            "created_after": "2025-01-01T00:00:00+01:00",
            "after_id": "3",
            "limit": "6",
        },
    ),
    "csv-options": (
        EXPORT_FULL,
        {
            "bom": "true",
            "excel_safe": "false",
            "is_admin": "false",
            "created_before": "2025-01-01T00:00:00Z",
            "updated_since": "2024-01-01T00:00:00Z",
        },
    ),
    "one-address": (EXPORT_FULL, {"format": "ndjson", "email": "NEW3@example.com"}),
    "nobody": (EXPORT, {"format": "json", "email": "no@example.com"}),
}


def options(path: str, params: dict[str, str]) -> list[str]:
    """The command's options for the request `path?params`."""
    words = ["--full"] if path == EXPORT_FULL else []
    for name, value in params.items():
        if (name, value) == ("bom", "true"):
            words.append("--bom")
        elif (name, value) == ("excel_safe", "false"):
            words.append("--no-excel-safe")
        else:
            words += [f"--{name.replace('_', '-')}", value]
    return words


@pytest.mark.parametrize(("path", "params"), CASES.values(), ids=CASES.keys())
@pytest.mark.usefixtures("users")
def test_the_file_holds_the_http_body_byte_for_byte(
    db_url: str,
    client: TestClient,
    key: dict[str, str],
    workdir: Path,
    path: str,
    params: dict[str, str],
) -> None:
    result = export(db_url, *options(path, params))
    response = http(client, key, path, **params)
    assert_exported(result, response)
    # Named as the endpoint names its download, in the working directory, alone.
    name = response.headers["Content-Disposition"].split('filename="')[1].rstrip('"')
    assert files(workdir) == [name]
    assert (workdir / name).read_bytes() == response.content
    assert result.stdout_bytes == b""


@pytest.mark.parametrize(("path", "params"), [CASES["full-csv"], CASES["filters-json"]])
@pytest.mark.usefixtures("users")
def test_dash_writes_the_http_body_to_stdout_and_no_file(
    db_url: str,
    client: TestClient,
    key: dict[str, str],
    workdir: Path,
    path: str,
    params: dict[str, str],
) -> None:
    result = export(db_url, *options(path, params), "-o", "-")
    response = http(client, key, path, **params)
    assert_exported(result, response)
    assert result.stdout_bytes == response.content
    assert files(workdir) == []


@pytest.mark.usefixtures("users")
def test_xlsx_holds_the_same_workbook_as_the_http_body(
    db_url: str, client: TestClient, key: dict[str, str], workdir: Path
) -> None:
    """The zip's entries are equal; only their modification times (now) can differ."""
    fields = "id,email,name,created_at,is_admin,last_login_at"
    result = export(db_url, "--full", "--format", "xlsx", "--fields", fields)
    response = http(client, key, EXPORT_FULL, format="xlsx", fields=fields)
    assert_exported(result, response)
    written = (workdir / "users_full_export.xlsx").read_bytes()
    with (
        zipfile.ZipFile(io.BytesIO(written)) as ours,
        zipfile.ZipFile(io.BytesIO(response.content)) as theirs,
    ):
        assert ours.namelist() == theirs.namelist()
        for name in ours.namelist():
            assert ours.read(name) == theirs.read(name), name
    sheet = openpyxl.load_workbook(io.BytesIO(written), read_only=True).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == tuple(fields.split(","))
    assert len(rows) == 1 + 2 * len(NAMES) + 2  # the header, then every live user


@pytest.mark.usefixtures("users")
def test_output_to_a_directory_uses_the_endpoint_name_and_replaces_an_older_file(
    db_url: str, client: TestClient, key: dict[str, str], workdir: Path
) -> None:
    (workdir / "backups").mkdir()
    (workdir / "backups" / "users_full_export.ndjson").write_text("yesterday's\n")
    result = export(db_url, "--full", "--format", "ndjson", "-o", "backups")
    response = http(client, key, EXPORT_FULL, format="ndjson")
    assert_exported(result, response)
    assert files(workdir / "backups") == ["users_full_export.ndjson"]
    assert (workdir / "backups" / "users_full_export.ndjson").read_bytes() == response.content


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "Unsupported format 'xml'"),
        (["--full", "--fields", "id,password"], "Unknown field 'password'"),
        (["--full", "--fields", "id,id"], "Field 'id' appears twice"),
        (["--created-after", "2025-01-01"], "--created-after: Value error, has no time zone"),
        (["--updated-since", "1700000000"], "--updated-since: Value error, must be an ISO 8601"),
        (["--is-active", "maybe"], "--is-active: Input should be a valid boolean"),
        (["--after-id", "-1"], "--after-id: Input should be greater than or equal to 0"),
        (["--limit", "0"], "--limit: Input should be greater than or equal to 1"),
        (["--format", "json", "--bom"], "'bom=true' applies to format 'csv' only"),
        (["--format", "xlsx", "--no-excel-safe"], "'excel_safe=false' applies to format 'csv'"),
        (["--fields", "id"], "--fields needs --full"),
        (["--cursor", cursor.encode(0)], "--cursor needs --full"),
        (["--cursor-file", "state"], "--cursor-file needs --full"),
        (["--full", "--cursor", "djE6eA"], "invalid cursor 'djE6eA'"),
        (["--full", "--cursor", "x", "--cursor-file", "state"], "either --cursor or --cursor-file"),
        (["--anonymize", "maybe"], "--anonymize: Value error, must be true, false or day"),
        # No key and REVIEWPOINT_ENV unset (as strict as prod): the servers' key is needed.
        (["--anonymize", "true"], "--anonymize needs REVIEWPOINT_ANONYMIZE_KEY"),
    ],
)
def test_bad_input_is_a_usage_error_in_one_line_leaving_files_as_they_were(
    db_url: str, workdir: Path, args: list[str], message: str
) -> None:
    (workdir / "users_export.csv").write_text("the last good export\n")
    result = export(db_url, *args)
    assert result.exit_code == 2
    assert message in one_line_error(result)
    assert files(workdir) == ["users_export.csv"]
    assert (workdir / "users_export.csv").read_text() == "the last good export\n"
    assert sql_rows(db_url, "SELECT count(*) FROM export_audit") == [(0,)]


ANONYMIZE_KEY = "the-servers-anonymize-key-0123456789abcdef"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (EXPORT, {"anonymize": "true"}),
        (EXPORT_FULL, {"anonymize": "day", "format": "ndjson", "fields": "name,id,last_login_at"}),
        (EXPORT_FULL, {"anonymize": "true", "format": "xlsx", "is_active": "true"}),
    ],
)
@pytest.mark.usefixtures("users")
def test_anonymize_writes_the_http_body_made_with_the_servers_key(
    db_url: str,
    settings: Settings,
    key: dict[str, str],
    workdir: Path,
    path: str,
    params: dict[str, str],
) -> None:
    result = export(
        db_url, *options(path, params), settings={"REVIEWPOINT_ANONYMIZE_KEY": ANONYMIZE_KEY}
    )
    served = settings.model_copy(update={"anonymize_key": SecretStr(ANONYMIZE_KEY)})
    with TestClient(create_app(served)) as client:
        response = http(client, key, path, **params)
    assert_exported(result, response)
    name = response.headers["Content-Disposition"].split('filename="')[1].rstrip('"')
    written = (workdir / name).read_bytes()
    if params.get("format") == "xlsx":
        with (
            zipfile.ZipFile(io.BytesIO(written)) as mine,
            zipfile.ZipFile(io.BytesIO(response.content)) as theirs,
        ):
            assert {n: mine.read(n) for n in mine.namelist()} == {
                n: theirs.read(n) for n in theirs.namelist()
            }
    else:
        assert written == response.content
    assert b"@example.com" not in written
    # Recorded with the other parameters, by both.
    recorded = [json.loads(row[0]) for row in sql_rows(db_url, "SELECT filters FROM export_audit")]
    assert [filters["anonymize"] for filters in recorded] == [params["anonymize"]] * 2


@SQLITE_ONLY
def test_an_output_directory_that_does_not_exist_fails_naming_the_file(
    db_url: str, workdir: Path
) -> None:
    line = one_line_error(export(db_url, "-o", "missing/users.csv"))
    assert line == "error: [Errno 2] No such file or directory: 'missing/users.csv'"
    assert files(workdir) == []


@pytest.mark.usefixtures("users")
def test_a_cursor_file_drives_an_incremental_sync(
    db_url: str, client: TestClient, key: dict[str, str], workdir: Path
) -> None:
    state = workdir / "sync.cursor"
    first = export(
        db_url, "--full", "--format", "ndjson", "--cursor-file", str(state), "-o", "all.ndjson"
    )
    # No cursor file yet: everything, as a full export without a cursor.
    assert_exported(first, http(client, key, EXPORT_FULL, format="ndjson"))
    token = first.stderr.removeprefix("cursor: ").strip()
    assert state.read_text() == f"{token}\n"

    admin = admin_headers(client, db_url)
    changed = client.patch("/api/v1/users/2", json={"name": "Renamed"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert client.delete("/api/v1/users/3", headers=admin).status_code == 204

    second = export(
        db_url, "--full", "--format", "ndjson", "--cursor-file", str(state), "-o", "changes.ndjson"
    )
    sync = http(client, key, EXPORT_FULL, format="ndjson", cursor=token)
    assert_exported(second, sync)
    assert (workdir / "changes.ndjson").read_bytes() == sync.content
    records = [json.loads(line) for line in sync.content.splitlines()]
    changes = [(r["id"], r["name"], r["is_deleted"]) for r in records]
    # The admin the test created, the rename and the deletion: nothing else.
    assert changes[:2] == [(2, "Renamed", False), (3, NAMES[2], True)]
    assert [r["email"] for r in records[2:]] == ["admin@example.com"]
    assert state.read_text() == f"{sync.headers[cursor.HEADER]}\n"
    assert sorted(files(workdir)) == ["all.ndjson", "changes.ndjson", "sync.cursor"]


@SQLITE_ONLY
def test_an_empty_cursor_file_is_refused_rather_than_read_as_a_first_run(
    db_url: str, workdir: Path
) -> None:
    (workdir / "sync.cursor").write_text("\n")
    result = export(db_url, "--full", "--cursor-file", "sync.cursor")
    assert result.exit_code == 2
    assert "sync.cursor holds no cursor: remove it" in one_line_error(result)
    assert files(workdir) == ["sync.cursor"]


def test_a_cursor_ahead_of_the_database_is_refused_and_audited_as_invalid(
    db_url: str, workdir: Path
) -> None:
    ahead = cursor.encode(10**6)
    result = export(db_url, "--full", "--cursor", ahead)
    assert result.exit_code == 2
    assert "cursor is ahead of this database's changes" in one_line_error(result)
    assert files(workdir) == []
    assert sql_rows(db_url, "SELECT outcome, status, filters FROM export_audit") == [
        ("invalid", 409, json.dumps({"cursor": ahead}))
    ]


@pytest.mark.usefixtures("users")
def test_the_audit_trail_records_the_export_as_run_by_the_os_user(
    db_url: str, workdir: Path
) -> None:
    result = export(db_url, "--full", "--format", "CSV", "--is-admin", "false", "--limit", "5")
    assert result.exit_code == 0, result.stderr
    [row] = sql_rows(
        db_url,
        "SELECT endpoint, format, filters, actor_kind, actor_id, actor_name, key_prefix, "
        "outcome, status, rows, bytes, client_address, user_agent, finished_at "
        "FROM export_audit",
    )
    size = (workdir / "users_full_export.csv").stat().st_size
    assert row[:-1] == (
        "export-full",
        "CSV",
        json.dumps({"is_admin": "false", "limit": "5"}),
        "cli",
        os.getuid(),
        getpass.getuser(),
        None,
        "completed",
        200,
        5,
        size,
        None,
        USER_AGENT,
    )
    assert row[-1] is not None
    # The trail's own listing finds it by that actor.
    listed = command(db_url, "audit", "list", "--actor", f"cli:{os.getuid()}", "--json")
    assert listed.exit_code == 0, listed.stderr
    [record] = json.loads(listed.stdout)
    assert record["actor"] == {
        "kind": "cli",
        "id": os.getuid(),
        "name": getpass.getuser(),
        "key_prefix": None,
    }


# --- a real process: a terminal, a signal, the database failing under it ----------

MANY = 20_000


@pytest.fixture
def many_users(db_url: str) -> None:
    """Enough rows, in small chunks, that an export is still running when the test acts."""
    insert_users(db_url, [(f"bulk{i}@example.com", f"Bulk {i}") for i in range(MANY)])


def _start(db_url: str, workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [REVIEWPOINT, "export", *args],
        env=environment(db_url, REVIEWPOINT_EXPORT_CHUNK_ROWS="20"),
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _stop_mid_export(process: subprocess.Popen[bytes], workdir: Path) -> Path:
    """Freeze the command once its temporary file holds rows; that file."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        parts = [path for path in workdir.iterdir() if path.name.endswith(".part")]
        if parts and parts[0].stat().st_size > 0:
            os.kill(process.pid, signal.SIGSTOP)
            assert parts[0].exists(), "the export ended before the test could stop it"
            return parts[0]
        time.sleep(0.002)
    raise AssertionError(f"no temporary file grew: {process.communicate()}")


def _break_database(db_url: str) -> None:
    """A real failure under the export: PostgreSQL ends its sessions, SQLite's file is
    overwritten with garbage past its first page."""
    if db_url.startswith("postgresql"):
        database = db_url.rsplit("/", 1)[1]
        pg_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        return
    path = Path(db_url.removeprefix("sqlite+aiosqlite:///"))
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(os.urandom(size - 4096))


@pytest.mark.usefixtures("many_users")
def test_a_database_failing_mid_export_leaves_no_file_and_exits_non_zero(
    db_url: str, workdir: Path
) -> None:
    process = _start(db_url, workdir, "--full", "-o", "users.csv")
    _stop_mid_export(process, workdir)
    try:
        _break_database(db_url)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1, stderr
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: the export failed after "), lines[0]
    assert f" of {MANY} rows (" in lines[0]
    assert lines[0].endswith("; users.csv was not written")
    assert stdout == b""
    assert files(workdir) == []
    if db_url.startswith("postgresql"):  # SQLite's file is garbage now: no trail to read
        [(outcome, detail)] = sql_rows(db_url, "SELECT outcome, detail FROM export_audit")
        assert (outcome, detail.startswith("database error: ")) == ("failed", True)


@SQLITE_ONLY
@pytest.mark.usefixtures("many_users")
def test_ctrl_c_mid_export_leaves_no_file_and_records_the_interruption(
    db_url: str, workdir: Path
) -> None:
    process = _start(db_url, workdir, "--full", "--format", "json")
    _stop_mid_export(process, workdir)
    os.kill(process.pid, signal.SIGINT)
    os.kill(process.pid, signal.SIGCONT)
    _, stderr = process.communicate(timeout=TIMEOUT)
    # 128 + SIGINT, as a shell reports a command Ctrl-C stopped; nothing to add to it.
    assert (process.returncode, stderr) == (130, b"")
    assert files(workdir) == []
    [(outcome, detail, rows)] = sql_rows(db_url, "SELECT outcome, detail, rows FROM export_audit")
    assert (outcome, detail) == ("aborted", INTERRUPTED)
    assert 0 < rows < MANY


@SQLITE_ONLY
@pytest.mark.usefixtures("many_users")
def test_a_reader_leaving_stdout_ends_the_export_quietly_as_a_shell_expects(
    db_url: str, workdir: Path
) -> None:
    """`reviewpoint export -o - | head`: exit 141 (SIGPIPE's), no traceback, recorded."""
    process = _start(db_url, workdir, "--full", "-o", "-")
    assert process.stdout is not None
    assert process.stdout.read(100).startswith(b"id,email,")
    process.stdout.close()
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert (process.returncode, stderr) == (141, b"")
    assert files(workdir) == []
    [(outcome, detail)] = sql_rows(db_url, "SELECT outcome, detail FROM export_audit")
    assert (outcome, detail) == ("aborted", READER_GONE)


@SQLITE_ONLY
@pytest.mark.usefixtures("users")
def test_a_terminal_on_stderr_shows_a_progress_bar_against_the_row_count(
    db_url: str, workdir: Path
) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [REVIEWPOINT, "export", "--full", "-o", "-"],
        env=environment(db_url, TERM="xterm", COLUMNS="100"),
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], TIMEOUT)
            try:
                chunk = os.read(leader, 4096) if ready else b""
            except OSError:  # EIO: the command ended and closed the terminal
                chunk = b""
            if not chunk:
                break
            seen += chunk
        stdout, _ = process.communicate(timeout=TIMEOUT)
    finally:
        os.close(leader)
    transcript = seen.decode(errors="replace")
    total = 2 * len(NAMES) + 2
    assert process.returncode == 0, transcript
    assert f"0/{total}" in transcript
    assert "rows/s" in transcript
    assert "cursor: " in transcript
    assert stdout.startswith(b"id,email,name,")
