"""Real databases for every test: SQLite files always, PostgreSQL when configured.

Each database is built by the Alembic migrations once per session (so the
migrations run on every test run) and then copied per test: a file copy on
SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL. Tests never share rows.

Set `REVIEWPOINT_TEST_DB_URL=postgresql+asyncpg://user@host:port/db` to add the
PostgreSQL variant of every database test; `db` names an existing database used
only to create and drop the per-test ones.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import make_url

from reviewpoint.config import Settings, load_settings
from reviewpoint.main import create_app
from reviewpoint.migrations import upgrade

PG_URL = os.environ.get("REVIEWPOINT_TEST_DB_URL", "")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
REVIEWPOINT = str(Path(sys.executable).parent / "reviewpoint")


def _pg_dsn(database: str | None = None) -> str:
    url = make_url(PG_URL).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def pg_execute(sql: str, database: str | None = None) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(_pg_dsn(database))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"rvp_template_{os.getpid()}"
    pg_execute(f'DROP DATABASE IF EXISTS "{name}"')
    pg_execute(f'CREATE DATABASE "{name}"')
    upgrade(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    yield name
    pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database of each backend."""
    with migrated_database(request, tmp_path, request.param) as url:
        yield url


@contextmanager
def migrated_database(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, file_name: str = "reviewpoint.db"
) -> Iterator[str]:
    """A copy of the migrated template of `backend`, dropped (PostgreSQL) on exit."""
    if backend == "sqlite":
        path = tmp_path / file_name
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    with _pg_database(template=request.getfixturevalue("pg_template")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all: a SQLite path not yet created, an empty PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    with _pg_database(template=None) as url:
        yield url


@contextmanager
def _pg_database(*, template: str | None) -> Iterator[str]:
    name = f"rvp_test_{uuid.uuid4().hex[:12]}"
    pg_execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(db_url: str) -> Settings:
    # _env_file=None: a developer's .env must not leak into tests. An explicit secret,
    # so tests can mint tokens the app accepts (tests/data.py bearer_headers).
    return load_settings(
        _env_file=None,
        env="test",
        db_url=db_url,
        log_level="warning",
        jwt_secret_key=secrets.token_urlsafe(32),
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


class LiveServer:
    """The app under a real uvicorn on 127.0.0.1, in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def export_connections_in_use(self) -> int:
        """Connections the app's export pool has lent out right now."""
        in_use: int = self.server.config.app.state.database.export_engine.pool.checkedout()
        return in_use

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@contextmanager
def served_process(
    db_url: str,
    log: Path,
    *,
    workers: int = 1,
    environment: dict[str, str] | None = None,
    **settings: str,
) -> Iterator[str]:
    """`reviewpoint serve` as its own process on 127.0.0.1 (no GIL shared with the
    test's client); yields its base URL. `settings` become REVIEWPOINT_* variables,
    `environment` other variables. Its stdout and stderr go to `log`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "REVIEWPOINT_ENV": "test",
        "REVIEWPOINT_DB_URL": db_url,
        "REVIEWPOINT_LOG_LEVEL": "warning",
        **{f"REVIEWPOINT_{name.upper()}": value for name, value in settings.items()},
        **(environment or {}),
    }
    command = [REVIEWPOINT, "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)]
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        # Each worker is a new interpreter importing the app: slow on a busy machine.
        deadline = time.monotonic() + 20 * workers
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def statements_sent(
    app: Any, keep: Callable[[str], bool] = lambda _statement: True
) -> Iterator[list[tuple[str, Any]]]:
    """Each SQL statement `keep` accepts, with its parameters, that the app's two pools
    send while the block runs."""
    sent: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if keep(statement):
            sent.append((statement, parameters))

    database = app.state.database
    engines = [database.engine.sync_engine, database.export_engine.sync_engine]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)


def eventually(check: Callable[[], bool], *, seconds: float = 10.0) -> bool:
    """Poll `check` until it holds or `seconds` pass: for what a server does after answering."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


# Requests the schema fuzzing sent (tests/contract/fuzzing.py), by run and backend,
# added up over the xdist workers for the summary below (README, "Reliability").
FUZZING_REQUESTS: Counter[str] = Counter()


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its counts go to the controller
        workeroutput["fuzzing_requests"] = dict(FUZZING_REQUESTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    FUZZING_REQUESTS.update(getattr(node, "workeroutput", {}).get("fuzzing_requests", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many PostgreSQL tests passed, so CI can insist on more than zero, and
    how many requests the schema fuzzing sent."""
    passed = terminalreporter.stats.get("passed", [])
    count = sum(1 for report in passed if "postgresql" in report.nodeid)
    terminalreporter.write_line(f"PostgreSQL tests passed: {count}")
    if FUZZING_REQUESTS:
        runs = ", ".join(f"{n} {run}" for run, n in sorted(FUZZING_REQUESTS.items()))
        terminalreporter.write_line(f"Schema fuzzing requests: {runs}")
