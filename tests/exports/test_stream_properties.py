"""Properties of a streamed export, seen through a real uvicorn server and a real HTTP client.

Every test runs the app under uvicorn on 127.0.0.1 (the `live_server` fixture) and
downloads with httpx, on each database. Exports read 100 rows per database round
trip, so a few thousand rows already make a long stream.

Kernel socket buffers on loopback hold megabytes, enough for the server to write a
whole test export before the client reads a byte. Tests that need the server to
still be reading the database while the client is mid-download shrink them
(`tight_server`, `tight_client`), and watch how far the server has read through
`fetched`, a pass-through wrapper around the chunk query that only records.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import socket
import sqlite3
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Executable, func, select, text, update
from sqlalchemy.engine import make_url

from reviewpoint.config import Settings, load_settings
from reviewpoint.db import create_engine, utcnow
from reviewpoint.exports import query
from reviewpoint.users.models import User
from tests.conftest import BACKENDS, LiveServer, eventually, pg_execute
from tests.data import create_api_key, insert_users
from tests.exports.live import SMALL_BUFFER, app_backends

EXPORT_FULL = "/api/v1/users/export-full"
EXPORT_MINIMAL = "/api/v1/users/export"
FULL_HEADER = b"id,email,name,created_at,updated_at,is_active,is_admin\r\n"
CHUNK_ROWS = 100
NAMES = (
    "Plain {i}",
    "Doe, Jane {i}",
    'Ann "Nancy" O\'Neil {i}',
    None,
    "Line one\nline two {i}",
    "=HYPERLINK({i})",
    "-Minus {i}",
    "用户 {i} 🚀",
    "Zoë Ærøskøbing {i}",
)


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture
def chunk_rows() -> int:
    return CHUNK_ROWS


@pytest.fixture
def settings(db_url: str, chunk_rows: int) -> Settings:
    """Overrides conftest's: small export chunks, and info logs to check what exports say.

    These tests run many exports of one key back to back or at once: the
    admission limits, tested in test_export_admission.py, are set out of the way.
    """
    return load_settings(
        _env_file=None,
        env="test",
        db_url=db_url,
        log_level="info",
        export_chunk_rows=chunk_rows,
        export_rate_limit="10000/minute",
        export_max_concurrent_per_credential=10,
        export_max_concurrent=4,
    )


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How far each chunk read reaches (its last id; open-ended: sys.maxsize), recorded
    when the read starts, so reads in flight count. Changes nothing."""
    seen: list[int] = []
    for reader in (query.PostgresChunks, query.SqliteChunks):
        real = reader.read

        async def recording(
            self: Any, after: int, end: int | None, real: Any = real
        ) -> query.Chunk:
            seen.append(sys.maxsize if end is None else end)
            return cast(query.Chunk, await real(self, after, end))

        monkeypatch.setattr(reader, "read", recording)
    return seen


# --- helpers -----------------------------------------------------------------------


def _add_users(db_url: str, count: int, *, tag: str = "user") -> None:
    """`count` users whose names exercise CSV quoting, formula guards and Unicode."""
    insert_users(
        db_url,
        [
            (
                f"{tag}{i}@example.com",
                None if (name := NAMES[i % len(NAMES)]) is None else name.format(i=i),
            )
            for i in range(count)
        ],
    )


def _write(db_url: str, *statements: Executable) -> None:
    """Commit statements in one transaction of a connection of our own (not the app's)."""

    async def run() -> None:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as connection:
                for statement in statements:
                    await connection.execute(statement)
        finally:
            await engine.dispose()

    asyncio.run(run())


def _rename_name_column(new: str, *, old: str = "name") -> Executable:
    """A column every export reads and the key check does not (that check joins
    the issuing admin's row in `users`, so the table itself must stay)."""
    return text(f'ALTER TABLE "users" RENAME COLUMN "{old}" TO "{new}"')


def _live_ids(db_url: str) -> list[int]:
    async def run() -> list[int]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                query = select(User.id).where(User.is_deleted.is_(False)).order_by(User.id)
                return list((await connection.scalars(query)).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def _ids(rows: list[list[str]]) -> list[int]:
    return [int(row[0]) for row in rows[1:]]


def _download(client: httpx.Client, headers: dict[str, str], path: str = EXPORT_FULL) -> bytes:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.content


def _read_at_least(pieces: Iterator[bytes], size: int) -> bytes:
    received = b""
    while len(received) < size:
        received += next(pieces)
    return received


def _is_postgresql(db_url: str) -> bool:
    return db_url.startswith("postgresql")


# --- 1. one snapshot ---------------------------------------------------------------


def test_export_is_one_snapshot_while_writers_commit(
    tight_client: httpx.Client,
    db_url: str,
    full_key: dict[str, str],
    fetched: list[int],
    app_log: io.StringIO,
) -> None:
    _add_users(db_url, 20_000)
    ids = _live_ids(db_url)
    undeleted, renamed_late, deleted_late = ids[-3000], ids[-5000:-4900], ids[-4000:-3900]
    renamed_early = ids[:50]
    _write(db_url, update(User).where(User.id == undeleted).values(is_deleted=True))
    before = _download(tight_client, full_key)
    before_rows = _rows(before)
    assert len(before_rows) == len(ids)  # header + every live row but the one deleted

    renamed_name = func.coalesce(User.name, "") + " (renamed)"
    fetched.clear()
    headers = {**full_key, "X-Request-ID": "snapshot-under-writes-1"}
    with tight_client.stream("GET", EXPORT_FULL, headers=headers) as response:
        assert response.status_code == 200
        counted = int(response.headers["X-Export-Rows"])
        pieces = response.iter_raw()
        head = _read_at_least(pieces, 64 * 1024)

        # Other connections commit while the export is half way; on SQLite (WAL) a
        # writer must not wait for the reader.
        started = time.monotonic()
        insert_users(db_url, [(f"late{i}@example.com", f"Late {i}") for i in range(100)])
        _write(
            db_url,
            update(User)
            .where(User.id.in_(renamed_early + renamed_late))
            .values(name=renamed_name, updated_at=utcnow()),
        )
        _write(
            db_url,
            update(User)
            .where(User.id.in_(deleted_late))
            .values(is_deleted=True, updated_at=utcnow()),
        )
        _write(db_url, update(User).where(User.id == undeleted).values(is_deleted=False))
        assert time.monotonic() - started < 5, "writers waited for the export to finish"
        # Not a vacuous pass: no read, even one in flight, had reached the changed
        # rows yet, and the export was still running.
        assert max(fetched) < min(renamed_late + deleted_late + [undeleted])
        assert "[snapshot-under-writes-1] export users_full_export.csv completed" not in (
            app_log.getvalue()
        )

        body = head + b"".join(pieces)

    rows = _rows(body)
    exported = _ids(rows)
    assert len(exported) == len(set(exported)), "an id appears twice"
    assert set(exported) == set(_ids(before_rows)), "rows missing, or rows added after the start"
    assert rows == before_rows, "rows changed after the start show new values"
    assert body == before
    assert counted == len(exported), "the count is not the snapshot's"

    # The writes did commit: a new export sees them.
    after = {row[0]: row for row in _rows(_download(tight_client, full_key))[1:]}
    assert str(undeleted) in after
    assert all(str(user_id) not in after for user_id in deleted_late)
    assert all(after[str(user_id)][2].endswith(" (renamed)") for user_id in renamed_late)
    assert len(after) == len(exported) + 100 + 1 - len(deleted_late)


# --- 2. client disconnects ---------------------------------------------------------


def _abort_download(server: LiveServer, key: dict[str, str], attempt: int) -> None:
    """One download given up early, in one of several ways a client goes away."""
    kind = attempt % 5
    if kind in (0, 1):
        # Hang up before the response starts (the export may still be opening), with
        # a FIN or with a reset.
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            request = f"GET {EXPORT_FULL} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {{key}}\r\n\r\n"
            sock.sendall(request.format(key=key["X-API-Key"]).encode())
            if kind == 1:
                time.sleep(0.01)
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
        return
    transport = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)]
    )
    with (
        httpx.Client(base_url=server.url, transport=transport, timeout=10) as client,
        client.stream("GET", EXPORT_FULL, headers=key) as response,
    ):
        assert response.status_code == 200
        pieces = response.iter_raw()
        if kind == 3:
            next(pieces)
        elif kind == 4:
            _read_at_least(pieces, 50_000)


def test_aborted_downloads_release_their_snapshot(
    tight_server: LiveServer, db_url: str, full_key: dict[str, str], app_log: io.StringIO
) -> None:
    _add_users(db_url, 10_000)
    for attempt in range(50):
        _abort_download(tight_server, full_key, attempt)

    assert eventually(lambda: tight_server.export_connections_in_use() == 0), (
        "export connections leaked"
    )
    # Each export stopped early and ended cleanly (its cleanup raised nothing).
    assert eventually(lambda: len(re.findall(r"csv aborted by", app_log.getvalue())) == 50), (
        app_log.getvalue()
    )
    assert "completed" not in app_log.getvalue()
    assert "failed" not in app_log.getvalue()
    if _is_postgresql(db_url):
        assert eventually(lambda: not app_backends(db_url)), app_backends(db_url)
    else:
        # No reader holds an old snapshot: a writer commits and the WAL checkpoints fully.
        insert_users(db_url, [("after-aborts@example.com", "After")])
        path = make_url(db_url).database
        assert path is not None
        with sqlite3.connect(path, timeout=2) as connection:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0

    with httpx.Client(base_url=tight_server.url, timeout=20) as client:
        exported = _ids(_rows(_download(client, full_key)))
    assert exported == _live_ids(db_url)


# --- 3. failures are never silent --------------------------------------------------


# Only a database server has connections another session can kill.
@pytest.mark.parametrize(
    "db_url", [backend for backend in BACKENDS if backend == "postgresql"], indirect=True
)
def test_database_lost_mid_stream_breaks_the_download_and_is_logged(
    tight_client: httpx.Client,
    db_url: str,
    full_key: dict[str, str],
    fetched: list[int],
    app_log: io.StringIO,
) -> None:
    _add_users(db_url, 20_000)
    database = make_url(db_url).database
    request_id = "lost-db-mid-stream-1"

    headers = {**full_key, "X-Request-ID": request_id}
    with tight_client.stream("GET", EXPORT_FULL, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["x-request-id"] == request_id
        pieces = response.iter_raw()
        received = _read_at_least(pieces, 64 * 1024)
        pg_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        assert max(fetched) < 19_000, "the export was already read to the end"
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            for piece in pieces:
                received += piece
    assert received.startswith(FULL_HEADER)

    def logged() -> bool:
        return f"[{request_id}] export users_full_export.csv failed" in app_log.getvalue()

    assert eventually(logged), app_log.getvalue()
    assert "response aborted" in app_log.getvalue()
    assert "completed" not in app_log.getvalue()
    assert " WARNING " not in app_log.getvalue(), "ending the broken snapshot raised"

    # The app recovers: dead pooled connections are replaced, the next export is whole.
    exported = _ids(_rows(_download(tight_client, full_key)))
    assert exported == _live_ids(db_url)


# --- 4. errors before the first byte -----------------------------------------------


def test_export_whose_query_fails_is_a_clean_500_not_a_503(
    live_server: LiveServer, db_url: str, full_key: dict[str, str], app_log: io.StringIO
) -> None:
    # Credentials check out, but the export's own query fails before any byte is sent.
    # A broken schema is our fault, not an outage: 503 would tell balancers to retry.
    _add_users(db_url, 10)
    _write(db_url, _rename_name_column("name_gone"))
    headers = {**full_key, "X-Request-ID": "cannot-start-1"}
    with httpx.Client(base_url=live_server.url, timeout=20) as client:
        for path in (EXPORT_FULL, EXPORT_MINIMAL):
            response = client.get(path, headers=headers)
            assert response.status_code == 500
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {"detail": "Internal server error"}
        assert "[cannot-start-1] export" in app_log.getvalue()
        assert "could not start" in app_log.getvalue()
        assert eventually(lambda: live_server.export_connections_in_use() == 0)

        _write(db_url, _rename_name_column("name", old="name_gone"))
        assert _ids(_rows(_download(client, full_key))) == _live_ids(db_url)


def test_database_down_is_a_clean_503(
    db_url: str, full_key: dict[str, str], tmp_path: Path
) -> None:
    if _is_postgresql(db_url):
        down = make_url(db_url).set(database="rvp_no_such_database")
        url = down.render_as_string(hide_password=False)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'reviewpoint.db'}"
    settings = load_settings(_env_file=None, env="test", db_url=url, log_level="error")

    with LiveServer(settings) as server:
        # One connection per request: a 500 closes the connection it was sent on.
        assert httpx.get(f"{server.url}/api/v1/health", timeout=20).status_code == 200
        ready = httpx.get(f"{server.url}/api/v1/health/ready", timeout=20)
        assert (ready.status_code, ready.json()) == (503, {"detail": "Database unreachable"})
        for path in (EXPORT_FULL, EXPORT_MINIMAL):
            response = httpx.get(f"{server.url}{path}", headers=full_key, timeout=20)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.headers["Retry-After"] == "2"
            assert set(response.json()) == {"detail"}


# --- 5. no event-loop stalls ----------------------------------------------------------


# The production chunk size: a chunk's work in Python is what could stall the loop.
# XLSX adds the most of it (escaping on SQLite, zipping on a thread).
@pytest.mark.parametrize("format_name", ["csv", "xlsx"])
@pytest.mark.parametrize("chunk_rows", [Settings.model_fields["export_chunk_rows"].default])
@pytest.mark.timing
def test_health_answers_quickly_while_exports_stream(
    live_server: LiveServer, db_url: str, full_key: dict[str, str], format_name: str
) -> None:
    _add_users(db_url, 30_000)
    expected = len(_live_ids(db_url))
    sampling = threading.Event()
    sampling.set()
    exports: list[int] = []  # rows of every finished export
    in_flight = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def download_back_to_back() -> None:
        try:
            with httpx.Client(base_url=live_server.url, timeout=30) as client:
                for _ in range(20):  # bounded; normally ends when sampling does
                    if not sampling.is_set():
                        return
                    with lock:
                        in_flight[0] += 1
                    try:
                        response = client.get(
                            EXPORT_FULL, params={"format": format_name}, headers=full_key
                        )
                    finally:
                        with lock:
                            in_flight[0] -= 1
                    assert response.status_code == 200, response.text
                    if format_name == "csv":
                        exports.append(response.content.count(b"@example.com"))
                    else:
                        with zipfile.ZipFile(io.BytesIO(response.content)) as workbook:
                            assert workbook.testzip() is None
                            sheet = workbook.read("xl/worksheets/sheet1.xml")
                        exports.append(sheet.count(b"<row>") - 1)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    workers = [threading.Thread(target=download_back_to_back) for _ in range(4)]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    try:
        assert eventually(lambda: in_flight[0] == 4, seconds=10)
        with httpx.Client(base_url=live_server.url, timeout=5) as client:
            for _ in range(200):
                if len(latencies) == 20:
                    break
                with lock:
                    busy = in_flight[0]
                started = time.perf_counter()
                response = client.get("/api/v1/health")
                elapsed = time.perf_counter() - started
                assert response.status_code == 200
                if busy >= 3:  # count samples taken while the exports really run
                    latencies.append(elapsed)
                time.sleep(0.02)
    finally:
        sampling.clear()
        for worker in workers:
            worker.join(timeout=60)
    assert not errors, errors
    assert len(latencies) == 20
    assert max(latencies) < 0.1, [round(latency, 3) for latency in latencies]
    assert exports and set(exports) == {expected}


# --- 6. the first byte comes early -----------------------------------------------------


@pytest.mark.timing
def test_first_bytes_arrive_before_the_export_is_read(
    tight_client: httpx.Client,
    db_url: str,
    full_key: dict[str, str],
    fetched: list[int],
) -> None:
    _add_users(db_url, 20_000)
    last_id = _live_ids(db_url)[-1]

    started = time.monotonic()
    with tight_client.stream("GET", EXPORT_FULL, headers=full_key) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert "content-length" not in response.headers
        pieces = response.iter_raw()
        head = _read_at_least(pieces, len(FULL_HEADER) + 1)
        first_byte = time.monotonic() - started
        assert head.startswith(FULL_HEADER)
        assert head.count(b"@example.com") >= 1  # the first chunk came with the header
        # The server reads on only as the client does.
        time.sleep(0.3)
        assert max(fetched) < last_id // 2, "the server read the whole export up front"
        body = head + b"".join(pieces)
    assert first_byte < 2
    assert _ids(_rows(body)) == _live_ids(db_url)
