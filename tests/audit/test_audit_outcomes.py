"""Every call to an export endpoint leaves exactly one audit record, whatever its end.

Streaming ends (completed, failed, aborted, timed out) run against a real uvicorn
on 127.0.0.1; refusals, which end before any byte, run through the TestClient.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from reviewpoint import security
from reviewpoint.audit import observer
from reviewpoint.audit.observer import WAIT_SECONDS, audit_write_failures
from reviewpoint.audit.service import INTERRUPTED, STALE_MARGIN
from reviewpoint.config import Settings, load_settings
from reviewpoint.db import utcnow
from reviewpoint.exports.attempt import ExportAttempt
from reviewpoint.main import create_app
from tests.audit.records import add_record, audit_rows, settled_rows, stored_digests
from tests.conftest import LiveServer, eventually, pg_execute
from tests.data import (
    bearer_headers,
    create_api_key,
    execute_sql,
    insert_user,
    insert_users,
    revoke_api_key,
)

EXPORT_FULL = "/api/v1/users/export-full"
EXPORT = "/api/v1/users/export"
SMALL_BUFFER = 32 * 1024


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Small chunks, so a few thousand users make a long stream; admission limits
    out of the way unless a test sets them."""
    return _settings(db_url)


def _settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "db_url": db_url,
        "log_level": "warning",
        "jwt_secret_key": secrets.token_urlsafe(32),
        "export_chunk_rows": 100,
        "export_rate_limit": "1000/minute",
        "export_max_concurrent_per_credential": 4,
        "export_max_concurrent": 4,
        **overrides,
    }
    return load_settings(_env_file=None, **values)


@pytest.fixture
def app_log(client: TestClient) -> Iterator[io.StringIO]:
    """What the app's own log handler writes."""
    buffer = io.StringIO()
    handlers = [h for h in logging.getLogger("reviewpoint").handlers if hasattr(h, "setStream")]
    assert handlers
    previous = [handler.setStream(buffer) for handler in handlers]
    yield buffer
    for handler, stream in zip(handlers, previous, strict=True):
        if stream is not None:
            handler.setStream(stream)


def _fill(db_url: str, count: int) -> None:
    insert_users(db_url, [(f"user{i}@example.com", f"User {i:06d}") for i in range(count)])


def _key(db_url: str, *scopes: str, name: str = "k") -> tuple[int, dict[str, str]]:
    key_id, secret = create_api_key(db_url, list(scopes or ["users:export_full"]), name=name)  # type: ignore[arg-type]
    return key_id, {"X-API-Key": secret}


def _held_export(server: LiveServer, headers: dict[str, str]) -> tuple[socket.socket, int]:
    """An export whose client reads nothing past the status line; its socket and status."""
    server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"GET {EXPORT_FULL} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode())
    sock.settimeout(20)
    return sock, int(sock.recv(12)[9:12])


def _tight_client(server: LiveServer) -> httpx.Client:
    """A client the server can run only ~200 kB ahead of."""
    server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    transport = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)]
    )
    # Uncompressed, so the bytes received compare with the record's body bytes.
    return httpx.Client(
        base_url=server.url,
        transport=transport,
        timeout=20,
        headers={"Accept-Encoding": "identity"},
    )


def _read_at_least(pieces: Iterator[bytes], size: int) -> bytes:
    received = b""
    while len(received) < size:
        received += next(pieces)
    return received


# --- completed ---------------------------------------------------------------------


def test_a_completed_export_is_one_record_of_what_the_client_received(
    live_server: LiveServer, db_url: str
) -> None:
    _fill(db_url, 250)
    key_id, secret = create_api_key(db_url, ["users:export_full"], name="nightly sync")
    headers = {
        "X-API-Key": secret,
        "X-Request-ID": "audit-completed-1",
        "User-Agent": "audit-test/1.0",
    }
    response = httpx.get(live_server.url + EXPORT_FULL, headers=headers, timeout=20)
    assert response.status_code == 200

    [row] = settled_rows(db_url, 1)
    assert row["request_id"] == response.headers["x-request-id"] == "audit-completed-1"
    assert (row["endpoint"], row["format"], json.loads(row["filters"])) == (
        "export-full",
        "csv",
        {},
    )
    assert (row["actor_kind"], row["actor_id"], row["actor_name"], row["key_prefix"]) == (
        "api_key",
        key_id,
        "nightly sync",
        security.api_key_prefix(secret),
    )
    assert (row["outcome"], row["status"], row["detail"]) == ("completed", 200, None)
    assert row["rows"] == response.text.count("@example.com") == 250
    assert row["bytes"] == len(response.content)
    assert row["started_at"] < row["finished_at"] <= utcnow()
    assert row["duration_seconds"] == pytest.approx(
        (row["finished_at"] - row["started_at"]).total_seconds()
    )
    assert (row["client_address"], row["user_agent"]) == ("127.0.0.1", "audit-test/1.0")


def test_an_admin_export_names_the_user_and_the_email_filter(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    _fill(db_url, 5)
    admin_id = insert_user(db_url, "boss@example.com", is_admin=True)
    response = client.get(
        EXPORT,
        params={"email": "USER3@example.com", "format": "CSV"},
        headers=bearer_headers(settings, admin_id),
    )
    assert response.status_code == 200

    [row] = settled_rows(db_url, 1)
    assert (row["actor_kind"], row["actor_id"], row["actor_name"], row["key_prefix"]) == (
        "user",
        admin_id,
        "boss@example.com",
        None,
    )
    assert (row["endpoint"], row["format"]) == ("export", "CSV")
    assert json.loads(row["filters"]) == {"email": "USER3@example.com"}
    assert (row["outcome"], row["rows"], row["bytes"]) == ("completed", 1, len(response.content))


# --- failed ------------------------------------------------------------------------


def test_an_export_whose_query_fails_before_the_first_byte_is_one_failed_record(
    live_server: LiveServer, db_url: str
) -> None:
    key_id, key = _key(db_url)
    # A column the export reads and the key check does not (that check joins
    # the issuing admin's row in `users`, so the table itself must stay).
    execute_sql(db_url, 'ALTER TABLE "users" RENAME COLUMN "name" TO "name_gone"')
    response = httpx.get(live_server.url + EXPORT_FULL, headers=key, timeout=20)
    assert response.status_code == 500

    [row] = settled_rows(db_url, 1)
    assert (row["outcome"], row["status"], row["detail"]) == ("failed", 500, "internal error")
    assert (row["actor_id"], row["rows"], row["bytes"]) == (key_id, 0, 0)
    assert row["finished_at"] is not None


def _corrupt_last_users_page(db_url: str) -> None:
    """Overwrite the header of the table page holding the highest ids, as a failing
    disk would: reading it fails with SQLITE_CORRUPT, other pages still read."""
    path = make_url(db_url).database
    assert path is not None
    with closing(sqlite3.connect(path)) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        (page,) = connection.execute(
            "SELECT pageno FROM dbstat WHERE name = 'users' AND pagetype = 'leaf' "
            "ORDER BY path DESC LIMIT 1"
        ).fetchone()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as database:
        database.seek((page - 1) * page_size)
        database.write(b"\xff" * 16)


def test_a_database_failing_mid_stream_is_one_failed_record(
    live_server: LiveServer, db_url: str
) -> None:
    """PostgreSQL: the export's backends are killed half way. SQLite, which has no
    server: the page of the last rows is unreadable, so the last chunk fails."""
    postgresql = db_url.startswith("postgresql")
    _fill(db_url, 10_000)
    _, key = _key(db_url)
    if not postgresql:
        _corrupt_last_users_page(db_url)
    with (
        _tight_client(live_server) as client,
        client.stream("GET", EXPORT_FULL, headers=key) as response,
    ):
        assert response.status_code == 200
        pieces = response.iter_raw()
        received = _read_at_least(pieces, 64 * 1024)
        if postgresql:
            pg_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{make_url(db_url).database}' AND pid <> pg_backend_pid()"
            )
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in pieces:
                received += piece

    [row] = settled_rows(db_url, 1)
    assert (row["outcome"], row["status"]) == ("failed", 200)
    assert row["detail"].startswith("database error: ")
    assert 0 < row["rows"] < 10_000
    assert 0 < row["bytes"] <= len(received)


# --- aborted -----------------------------------------------------------------------


def test_a_client_hanging_up_mid_stream_is_one_aborted_record(
    live_server: LiveServer, db_url: str
) -> None:
    _fill(db_url, 10_000)
    _, key = _key(db_url)
    with (
        _tight_client(live_server) as client,
        client.stream("GET", EXPORT_FULL, headers=key) as response,
    ):
        assert response.status_code == 200
        _read_at_least(response.iter_raw(), 64 * 1024)
    # Leaving the block closes the connection with most of the export unread.

    [row] = settled_rows(db_url, 1)
    assert (row["outcome"], row["status"], row["detail"]) == (
        "aborted",
        200,
        "the client disconnected",
    )
    assert 0 < row["rows"] < 10_000
    assert row["bytes"] >= 64 * 1024
    assert row["finished_at"] is not None


def test_a_client_that_stops_reading_is_one_aborted_record_naming_the_timeout(
    db_url: str,
) -> None:
    _fill(db_url, 4000)
    _, key = _key(db_url)
    with LiveServer(_settings(db_url, export_send_timeout=1.0)) as server:
        sock, status = _held_export(server, key)
        with sock:
            assert status == 200
            [row] = settled_rows(db_url, 1)
    assert (row["outcome"], row["status"], row["detail"]) == (
        "aborted",
        200,
        "the client accepted no data for 1 s",
    )
    assert row["rows"] < 4000


def test_an_export_past_its_time_limit_is_one_aborted_record_naming_the_limit(
    db_url: str,
) -> None:
    _fill(db_url, 4000)
    _, key = _key(db_url)
    with LiveServer(_settings(db_url, export_max_seconds=1.0)) as server:
        server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport = httpx.HTTPTransport(
            socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)]
        )
        with (
            httpx.Client(base_url=server.url, transport=transport, timeout=20) as client,
            # Uncompressed: gzip would let this slow reader finish within the limit.
            client.stream(
                "GET", EXPORT_FULL, headers={**key, "Accept-Encoding": "identity"}
            ) as response,
        ):
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in response.iter_raw(1024):
                    time.sleep(0.01)  # slow but steady
        [row] = settled_rows(db_url, 1)
    assert (row["outcome"], row["status"], row["detail"]) == (
        "aborted",
        200,
        "the export ran past 1 s",
    )
    assert 0 < row["rows"] < 4000


# --- denied, limited, invalid --------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "no credential",
        "unknown key",
        "revoked key",
        "key without the scope",
        "non-admin token",
        "feature switched off",
    ],
)
def test_a_refused_export_is_one_denied_record(case: str, db_url: str, settings: Settings) -> None:
    _, full = _key(db_url)
    narrow_id, narrow = _key(db_url, "users:export", name="narrow")
    revoked_id, revoked = _key(db_url, name="old")
    revoke_api_key(db_url, revoked_id)
    user_id = insert_user(db_url, "plain@example.com")
    expected: tuple[int, str | None, int | None] = {
        "no credential": (401, None, None),
        "unknown key": (401, None, None),
        "revoked key": (401, None, None),
        "key without the scope": (403, "api_key", narrow_id),
        "non-admin token": (403, "user", user_id),
        # Checked before any credential: the caller is not known.
        "feature switched off": (403, None, None),
    }[case]
    headers = {
        "no credential": {},
        "unknown key": {"X-API-Key": security.generate_api_key().secret},
        "revoked key": revoked,
        "key without the scope": narrow,
        "non-admin token": bearer_headers(settings, user_id),
        "feature switched off": full,
    }[case]
    if case == "feature switched off":
        settings = settings.model_copy(update={"feature_users_export_full": False})

    with TestClient(create_app(settings)) as client:
        response = client.get(EXPORT_FULL, headers=headers)
    assert response.status_code == expected[0]

    [row] = settled_rows(db_url, 1)
    assert (row["outcome"], row["status"], row["detail"]) == (
        "denied",
        response.status_code,
        response.json()["detail"],
    )
    assert (row["actor_kind"], row["actor_id"]) == expected[1:]
    assert (row["rows"], row["bytes"]) == (0, 0)
    assert row["finished_at"] is not None and row["duration_seconds"] is not None


def test_an_export_over_the_rate_limit_is_one_limited_record(
    db_url: str, settings: Settings
) -> None:
    key_id, key = _key(db_url)
    with TestClient(create_app(settings.model_copy(update={"export_rate_limit": "1/minute"}))) as c:
        assert c.get(EXPORT_FULL, headers=key).status_code == 200
        refused = c.get(EXPORT_FULL, headers=key)
    assert refused.status_code == 429

    completed, limited = settled_rows(db_url, 2)
    assert completed["outcome"] == "completed"
    assert (limited["outcome"], limited["status"], limited["detail"]) == (
        "limited",
        429,
        refused.json()["detail"],
    )
    assert (limited["actor_kind"], limited["actor_id"]) == ("api_key", key_id)


def test_a_streaming_export_is_running_until_it_ends_and_one_over_the_cap_is_limited(
    db_url: str,
) -> None:
    _fill(db_url, 4000)
    key_id, key = _key(db_url)
    with LiveServer(_settings(db_url, export_max_concurrent_per_credential=1)) as server:
        sock, status = _held_export(server, key)
        with sock:
            assert status == 200
            [running] = audit_rows(db_url)
            assert (running["outcome"], running["status"], running["finished_at"]) == (
                "running",
                200,
                None,
            )
            refused = httpx.get(server.url + EXPORT_FULL, headers=key, timeout=10)
            assert refused.status_code == 429
        held, limited = settled_rows(db_url, 2)
    assert held["id"] == running["id"]
    assert (held["outcome"], held["status"]) == ("aborted", 200)
    assert (limited["outcome"], limited["status"], limited["actor_id"]) == ("limited", 429, key_id)
    assert "already runs 1 export" in limited["detail"]


@pytest.mark.parametrize("value", ["xml", "x" * 300])
def test_an_unsupported_format_is_one_invalid_record(
    client: TestClient, db_url: str, value: str
) -> None:
    _, key = _key(db_url)
    response = client.get(EXPORT, params={"format": value}, headers=key)
    assert response.status_code == 400

    [row] = settled_rows(db_url, 1)
    assert (row["outcome"], row["status"], row["detail"]) == (
        "invalid",
        400,
        response.json()["detail"],
    )
    # Cut to the column's size, never a failed write.
    assert row["format"] == value[:32]


# --- secrets ---------------------------------------------------------------------------


def test_no_record_holds_a_key_secret_digest_token_or_password(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    _fill(db_url, 3)
    _, full = _key(db_url)
    _, narrow = _key(db_url, "users:export", name="narrow")
    revoked_id, revoked = _key(db_url, name="old")
    revoke_api_key(db_url, revoked_id)
    admin = bearer_headers(settings, insert_user(db_url, "boss@example.com", is_admin=True))
    token = admin["Authorization"].removeprefix("Bearer ")
    calls = [
        (EXPORT_FULL, full, {}),
        (EXPORT_FULL, narrow, {}),
        (EXPORT_FULL, revoked, {}),
        (EXPORT_FULL, admin, {}),
        (EXPORT_FULL, {**full, **admin}, {}),
        (EXPORT_FULL, {"Authorization": f"Bearer {token}x"}, {}),
        # Credentials pasted into the URL are not filters: never copied.
        (EXPORT, admin, {"api_key": full["X-API-Key"], "access_token": token}),
        (EXPORT, {}, {"api_key": full["X-API-Key"]}),
    ]
    for path, headers, params in calls:
        client.get(path, headers=headers, params=params)

    rows = settled_rows(db_url, len(calls))
    secrets_ = [full["X-API-Key"], narrow["X-API-Key"], revoked["X-API-Key"], token]
    secrets_ += [secret.rsplit("_", 1)[1] for secret in secrets_[:3]]  # the random parts
    secrets_ += stored_digests(db_url)
    secrets_.append(settings.jwt_secret_key.get_secret_value())  # type: ignore[union-attr]
    for row in rows:
        for column, value in row.items():
            for secret in secrets_:
                assert secret not in str(value), (column, value)


# --- the audit never breaks an export ---------------------------------------------------


def test_an_audit_write_that_fails_leaves_the_export_whole_and_is_logged_and_counted(
    client: TestClient, db_url: str, app_log: io.StringIO
) -> None:
    _fill(db_url, 250)
    _, key = _key(db_url)
    execute_sql(db_url, "ALTER TABLE export_audit RENAME TO export_audit_gone")
    failures = audit_write_failures()

    response = client.get(EXPORT_FULL, headers={**key, "X-Request-ID": "audit-lost-1"})
    assert response.status_code == 200
    assert response.text.count("@example.com") == 250
    assert response.text.endswith("\r\n")

    # Logged and counted as soon as each write fails, beside the export.
    assert eventually(lambda: audit_write_failures() == failures + 2)
    errors = [line for line in app_log.getvalue().splitlines() if " ERROR " in line]
    assert len(errors) == 2, app_log.getvalue()
    for line, moment in zip(errors, ("start", "end"), strict=True):
        assert "audit record of export request audit-lost-1 " in line
        assert f"not written at its {moment}" in line
        assert "export_audit" in line

    # Writes resume once the table is back; the lost attempt left no record.
    execute_sql(db_url, "ALTER TABLE export_audit_gone RENAME TO export_audit")
    assert client.get(EXPORT_FULL, headers=key).status_code == 200
    [row] = settled_rows(db_url, 1)
    assert row["outcome"] == "completed"


@contextmanager
def _audit_table_locked(db_url: str) -> Iterator[None]:
    """Another connection holds what an audit write needs: SQLite's write lock, or
    on PostgreSQL an exclusive lock on the table."""
    if not db_url.startswith("postgresql"):
        path = make_url(db_url).database
        assert path is not None
        with closing(sqlite3.connect(path, isolation_level=None)) as writer:
            writer.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                writer.execute("ROLLBACK")
        return
    dsn = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    loop = asyncio.new_event_loop()
    try:
        connection = loop.run_until_complete(asyncpg.connect(dsn))
        try:
            loop.run_until_complete(
                connection.execute("BEGIN; LOCK TABLE export_audit IN ACCESS EXCLUSIVE MODE")
            )
            yield
            loop.run_until_complete(connection.execute("ROLLBACK"))
        finally:
            loop.run_until_complete(connection.close())
    finally:
        loop.close()


def test_an_audit_write_kept_waiting_delays_the_export_briefly_and_lands_once_it_can(
    client: TestClient, db_url: str
) -> None:
    _fill(db_url, 250)
    _, key = _key(db_url)
    with _audit_table_locked(db_url):
        started = time.monotonic()
        response = client.get(EXPORT_FULL, headers=key)
        took = time.monotonic() - started
        assert response.status_code == 200
        assert response.text.count("@example.com") == 250
        # It waited for its writes twice (start and end) for a short while, not
        # for the lock: the lock is held until this block ends, so an export
        # waiting for it would not finish here at all (the request's statement
        # timeout is 15 s). The slack covers a loaded CI machine (one full run
        # took 1.7 s; alone it takes about 0.6 s).
        assert took < 2 * WAIT_SECONDS + 3.0, took
        time.sleep(0.5)
    [row] = settled_rows(db_url, 1)
    assert (row["outcome"], row["rows"], row["bytes"]) == (
        "completed",
        250,
        len(response.content),
    )


def test_audit_writes_beyond_the_backlog_are_dropped_logged_and_counted(
    client: TestClient, db_url: str, app_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observer, "MAX_PENDING_WRITES", 1)
    failures = audit_write_failures()
    with _audit_table_locked(db_url):
        kept = client.get(EXPORT_FULL, headers={"X-Request-ID": "audit-kept-1"})
        dropped = client.get(EXPORT_FULL, headers={"X-Request-ID": "audit-dropped-1"})
        assert kept.status_code == dropped.status_code == 401
        assert audit_write_failures() == failures + 1
        assert "request audit-dropped-1 (denied) not written at its end" in app_log.getvalue()
        assert "1 audit writes in flight" in app_log.getvalue()
    [row] = settled_rows(db_url, 1)
    assert row["request_id"] == "audit-kept-1"


class RecordingObserver:
    """An export observer that keeps what it was told, as the metrics observer would."""

    def __init__(self) -> None:
        self.finished_attempts: list[ExportAttempt] = []

    async def started(self, attempt: ExportAttempt) -> None:
        pass

    async def finished(self, attempt: ExportAttempt) -> None:
        self.finished_attempts.append(attempt)


def test_a_refusal_because_the_database_is_down_is_failed_503_and_its_lost_record_counted(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'reviewpoint.db'}"
    app = create_app(_settings(url, log_level="error"))
    recorder = RecordingObserver()
    with TestClient(app) as client:
        app.state.export_observers.append(recorder)
        failures = audit_write_failures()
        response = client.get(
            EXPORT_FULL, headers={"X-API-Key": security.generate_api_key().secret}
        )
        assert response.status_code == 503
        [attempt] = recorder.finished_attempts
        assert eventually(lambda: audit_write_failures() == failures + 1)
    assert (attempt.outcome, attempt.status) == ("failed", 503)


# --- exports a crash cut off -------------------------------------------------------------


def test_start_up_marks_running_records_older_than_the_longest_export_failed(
    db_url: str, settings: Settings
) -> None:
    settings = settings.model_copy(update={"export_max_seconds": 60.0})
    longest = timedelta(seconds=60) + STALE_MARGIN
    now = utcnow()
    stale = add_record(
        db_url, started_at=now - longest - timedelta(minutes=1), outcome="running", rows=0
    )
    # Younger than the longest export: another worker may be streaming it now.
    live = add_record(db_url, started_at=now - longest + timedelta(minutes=1), outcome="running")
    old_but_done = add_record(db_url, started_at=now - timedelta(days=30), outcome="completed")

    def by_id() -> dict[int, dict[str, object]]:
        return {row["id"]: row for row in audit_rows(db_url)}

    with TestClient(create_app(settings)):
        assert eventually(lambda: by_id()[stale]["outcome"] == "failed")
    rows = by_id()
    assert (rows[stale]["status"], rows[stale]["detail"], rows[stale]["finished_at"]) == (
        200,
        INTERRUPTED,
        None,
    )
    assert rows[live]["outcome"] == "running"
    assert rows[old_but_done]["outcome"] == "completed"
