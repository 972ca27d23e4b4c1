"""A SQLite file that cannot be written: full disk, read-only file.

Every write (a user, a login's `last_login_at`, an API key) answers 503 with a
JSON detail and `Retry-After`; reads go on (exports, readiness; an export's
audit record is lost and logged, by design: see audit/observer.py); nothing
half-written stays behind; once the file can be written again the same server
writes again.

Disk full without root or a small file system: the server's own process gets
`RLIMIT_FSIZE` 0 (prlimit), so every write(2) it makes fails with EFBIG, which
SQLite reports as an I/O error on write, where ENOSPC would be SQLITE_FULL: both
are codes errors.py answers with 503. Read-only: the file is made immutable
(`chattr +i`) when the tests run as root, whom no mode bit stops; otherwise its
mode is 0444.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import BACKENDS, LiveServer, served_process
from tests.data import BULK_PASSWORD
from tests.faults.calls import (
    ADMIN_EMAIL,
    EXPORT_FULL,
    LOGIN,
    READY,
    USERS,
    Callers,
    assert_retry_later,
    fault_settings,
    live_server_on,
)

KEYS = "/api/v1/api-keys"
SQLITE = pytest.mark.parametrize(
    "db_url", [name for name in BACKENDS if name == "sqlite"], indirect=True
)


def _path(db_url: str) -> Path:
    database = make_url(db_url).database
    assert database is not None
    return Path(database)


def _each_write(
    callers: Callers, email: str
) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    """A user, a login (its `last_login_at`), an API key: each a write of its own kind."""
    return {
        "user": lambda client: client.post(
            USERS, json={"email": email, "password": "long-enough-1"}, headers=callers.admin
        ),
        "login": lambda client: client.post(
            LOGIN, data={"username": ADMIN_EMAIL, "password": BULK_PASSWORD}
        ),
        "key": lambda client: client.post(
            KEYS, json={"name": email, "scopes": ["users:export"]}, headers=callers.admin
        ),
    }


def _writes(client: httpx.Client, callers: Callers, email: str) -> dict[str, httpx.Response]:
    return {name: write(client) for name, write in _each_write(callers, email).items()}


def _stored(db_url: str) -> tuple[str, list[str], list[str], str | None]:
    """The file's integrity, its users' emails, its keys' names, the admin's last login."""
    with closing(sqlite3.connect(_path(db_url))) as connection:
        (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
        emails = [row[0] for row in connection.execute("SELECT email FROM users ORDER BY id")]
        keys = [row[0] for row in connection.execute("SELECT name FROM api_keys ORDER BY id")]
        (last_login,) = connection.execute(
            "SELECT last_login_at FROM users WHERE email = ?", (ADMIN_EMAIL,)
        ).fetchone()
    return integrity, emails, keys, last_login


def _assert_refused_and_nothing_written(
    db_url: str,
    refused: dict[str, httpx.Response],
    before: tuple[str, list[str], list[str], str | None],
) -> None:
    for response in refused.values():
        assert_retry_later(response, "Database unavailable", retry_after=2)
    assert _stored(db_url) == before
    assert before[0] == "ok"


def _assert_written(db_url: str, written: dict[str, httpx.Response], email: str) -> None:
    assert {name: r.status_code for name, r in written.items()} == {
        "user": 201,
        "login": 200,
        "key": 201,
    }, {name: r.text for name, r in written.items()}
    integrity, emails, keys, last_login = _stored(db_url)
    assert integrity == "ok"
    assert email in emails and email in keys and last_login is not None


def _server_pid(url: str) -> int:
    """The pid of the `reviewpoint serve` listening at `url` (a child of this process)."""
    port = url.rsplit(":", 1)[1].encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in arguments and arguments[arguments.index(b"--port") + 1 :][:1] == [port]:
            return int(entry.name)
    raise LookupError(f"no server process listens at {url}")


@contextmanager
def _disk_full(pid: int) -> Iterator[None]:
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


@SQLITE
def test_a_full_disk_refuses_writes_with_503_and_writes_again_once_space_is_free(
    db_url: str, tmp_path: Path
) -> None:
    settings = fault_settings(db_url)
    callers = Callers.made_in(db_url, settings)
    secret = settings.jwt_secret_key.get_secret_value()
    before = _stored(db_url)
    with (
        served_process(
            db_url, tmp_path / "server.log", jwt_secret_key=secret, export_rate_limit="1000/minute"
        ) as url,
        httpx.Client(base_url=url, timeout=20) as client,
    ):
        with _disk_full(_server_pid(url)):
            refused = _writes(client, callers, "during@example.com")
            export = client.get(EXPORT_FULL, headers=callers.key)
            ready = client.get(READY)
        _assert_refused_and_nothing_written(db_url, refused, before)
        written = _writes(client, callers, "after@example.com")
    assert export.status_code == 200 and ADMIN_EMAIL in export.text
    assert ready.status_code == 200
    _assert_written(db_url, written, "after@example.com")


class ReadOnly:
    """Makes a file read-only and writable again, for root too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mode = path.stat().st_mode
        self.on = False

    def set(self, on: bool) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i" if on else "-i", str(self.path)], check=True)
        else:
            self.path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH if on else self.mode)
        self.on = on


@pytest.fixture
def read_only(db_url: str) -> Iterator[ReadOnly]:
    switch = ReadOnly(_path(db_url))
    yield switch
    if switch.on:
        switch.set(False)


@SQLITE
def test_a_read_only_file_refuses_writes_with_503_and_writes_again_once_writable(
    db_url: str, read_only: ReadOnly
) -> None:
    settings = fault_settings(db_url)
    callers = Callers.made_in(db_url, settings)
    before = _stored(db_url)
    # Read-only before the server starts, so every connection it opens is read-only.
    read_only.set(True)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        refused = _writes(client, callers, "during@example.com")
        export = client.get(EXPORT_FULL, headers=callers.key)
        ready = client.get(READY)
        read_only.set(False)
        _assert_refused_and_nothing_written(db_url, refused, before)
        # The export and readiness may have left connections opened read-only in
        # the pool: the first write that meets one is refused and closes them all.
        first = _each_write(callers, "first@example.com")["user"](client)
        written = _writes(client, callers, "after@example.com")
    assert export.status_code == 200 and ADMIN_EMAIL in export.text
    assert ready.status_code == 200
    assert first.status_code in (201, 503), first.text
    _assert_written(db_url, written, "after@example.com")


@SQLITE
def test_a_write_lock_held_past_the_busy_timeout_is_503_and_writes_resume_once_released(
    db_url: str,
) -> None:
    """Another process (a batch job, a long migration) keeps SQLite's one write lock:
    writes wait the 10 s busy timeout, then 503; reads go on beside it (WAL)."""
    with (
        live_server_on(db_url) as live,
        closing(sqlite3.connect(_path(db_url), isolation_level=None)) as other_process,
    ):
        client, callers, before = live.client, live.callers, _stored(db_url)
        other_process.execute("BEGIN IMMEDIATE")
        try:
            with ThreadPoolExecutor(3) as beside:
                # The three writes wait for the lock together, not one after another.
                waiting = {
                    name: beside.submit(write, client)
                    for name, write in _each_write(callers, "during@example.com").items()
                }
                export = client.get(EXPORT_FULL, headers=callers.key)
                ready = client.get(READY)
                refused = {name: future.result() for name, future in waiting.items()}
        finally:
            other_process.execute("ROLLBACK")
        _assert_refused_and_nothing_written(db_url, refused, before)
        written = _writes(client, callers, "after@example.com")
    assert export.status_code == 200 and ADMIN_EMAIL in export.text
    assert export.elapsed.total_seconds() < 5, "a read waited for the write lock"
    assert ready.status_code == 200
    for response in refused.values():
        assert response.elapsed.total_seconds() >= 9, "refused before the busy timeout"
    _assert_written(db_url, written, "after@example.com")
