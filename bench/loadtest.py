"""Load test: the service under a storm of exports, bad logins, admin reads and probes.

    python bench/loadtest.py [--db sqlite|postgresql|both] [--users N] [--duration S]
                             [--workers N] [--json PATH]

For each database: a fresh database seeded with the CLI, a server started with
`reviewpoint serve` on 127.0.0.1 with its default limits, then for a fixed time
full exports from three API keys and an admin, email-filtered exports, wrong-password
logins, admin API reads and health probes, all at once. Every 200 export is parsed
as it streams. The report names each pass criterion with PASS or FAIL; the exit
status is 1 if any fails. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import csv
import io
import itertools
import json
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from harness import (
    BENCH_DIR,
    CLI,
    Backend,
    Database,
    Postgres,
    free_port,
    logger,
    run,
    seed,
    wait_healthy,
)

CACHE_DIR = BENCH_DIR / ".cache"

EXPORT_FULL = "/api/v1/users/export-full"
EXPORT_EMAIL = "/api/v1/users/export"
LOGIN = "/api/v1/auth/login"
USERS = "/api/v1/users"
API_KEYS = "/api/v1/api-keys"
HEALTH = "/api/v1/health"
READY = "/api/v1/health/ready"
FULL_HEADER = ["id", "email", "name", "created_at", "updated_at", "is_active", "is_admin"]
EMAIL_HEADER = ["id", "email", "name"]

# The traffic mix (concurrent loops of each kind).
EXPORT_KEYS = 3
LOOPS_PER_KEY = 4
ADMIN_EXPORT_LOOPS = 2
EMAIL_EXPORT_LOOPS = 2
BAD_LOGIN_LOOPS = 4
ADMIN_READ_LOOPS = 2
PROBE_EVERY_S = 0.05

# A request that takes longer than this is a failure, not a slow success.
EXPORT_TIMEOUT_S = 60.0
OTHER_TIMEOUT_S = 10.0
# An idle pooled connection is dropped before uvicorn's 5 s keep-alive closes it:
# at httpx's default (also 5 s) a loop back from a Retry-After pause could send
# on a connection the server was closing ("Server disconnected without sending
# a response").
KEEPALIVE_EXPIRY_S = 2.0
# Pause after a failed request, so a broken server is not hammered in a tight loop.
FAILURE_PAUSE_S = 0.1
# What a well-behaved client waits after a 429 that gives no usable Retry-After.
MISSING_RETRY_AFTER_PAUSE_S = 1.0

# The pass criteria.
PROBE_P99_MAX_S = 0.250
IDLE_GRACE_S = 2.0

RSS_EVERY_S = 0.1
PG_EVERY_S = 0.2


log = logger("loadtest")


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile: the p99 is a latency some request really had."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


# --------------------------------------------------------------------------- what is recorded


@dataclass
class Endpoint:
    """One kind of request and everything seen from it during the storm."""

    label: str
    loops: int
    # Statuses that are a correct answer here; 429 is allowed only where a limit applies.
    expected: list[int]
    limited: bool = False
    export: bool = False
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "429", "timeout", ...
    # Completion times: of 200s for exports, of every answered request otherwise.
    latencies_s: list[float] = field(default_factory=list)
    first_byte_s: list[float] = field(default_factory=list)
    complete: int = 0
    incomplete: int = 0
    retry_after_bad: int = 0
    ratelimit_headers: int = 0
    server_errors: int = 0
    unexpected: int = 0
    failures: int = 0  # timeouts, connection errors, cut-off bodies
    # Each distinct problem (the first few kinds) and how often it was seen.
    samples: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def note(self, problem: str) -> None:
        problem = problem[:300]
        if problem in self.samples or len(self.samples) < 5:
            self.samples[problem] = self.samples.get(problem, 0) + 1

    def answered(self, response: httpx.Response, body: bytes) -> float:
        """Record one answer; returns how long this loop should wait before its next request."""
        status = response.status_code
        self.count(str(status))
        if status == 429:
            if not self.limited:
                self.note(f"429 where no limit applies: {body[:200]!r}")
            if "ratelimit" in response.headers or "ratelimit-policy" in response.headers:
                self.ratelimit_headers += 1
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit() and int(retry_after) >= 1:
                return float(retry_after)
            self.retry_after_bad += 1
            self.note(f"429 with Retry-After {retry_after!r}")
            return MISSING_RETRY_AFTER_PAUSE_S
        if status >= 500:
            self.server_errors += 1
            self.note(f"{status}: {body[:200]!r}")
            return FAILURE_PAUSE_S
        if status not in self.expected:
            self.unexpected += 1
            self.note(f"unexpected {status}: {body[:200]!r}")
            return FAILURE_PAUSE_S
        return 0.0

    def failed(self, error: BaseException, elapsed_s: float) -> float:
        kind = "timeout" if isinstance(error, TimeoutError | httpx.TimeoutException) else "error"
        self.count(kind)
        self.failures += 1
        self.note(f"{kind} after {elapsed_s:.0f} s: {type(error).__name__} {error}".strip())
        return FAILURE_PAUSE_S

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def too_many(self) -> int:
        return self.statuses.get("429", 0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        return cls(**data)


class CsvCheck:
    """Parses a CSV body as it streams: header, record count, ids strictly ascending.

    Names hold quoted line breaks, so lines cannot be counted; the csv module gets
    each block that ends on a record boundary (a line feed after an even number of
    quotes), which keeps the work per chunk small and the event loop responsive.
    """

    def __init__(self, header: list[str]) -> None:
        self.expected_header = header
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.pending = ""
        self.header: list[str] | None = None
        self.records = 0
        self.last_id = 0
        self.first_record: list[str] | None = None
        self.problem: str | None = None

    def feed(self, data: bytes) -> None:
        if self.problem is not None:
            return
        try:
            text = self.pending + self.decoder.decode(data)
        except UnicodeDecodeError as error:
            self.problem = f"not UTF-8: {error}"
            return
        end = text.rfind("\n")
        while end >= 0 and text.count('"', 0, end) % 2:
            end = text.rfind("\n", 0, end)
        self.pending = text[end + 1 :]
        if end >= 0:
            self._parse(text[: end + 1])

    def _parse(self, block: str) -> None:
        for row in csv.reader(io.StringIO(block, newline="")):
            if self.header is None:
                self.header = row
                if row != self.expected_header:
                    self.problem = f"header {row}"
                    return
                continue
            if len(row) != len(self.expected_header):
                self.problem = f"record {self.records + 1} has {len(row)} fields"
                return
            try:
                record_id = int(row[0])
            except ValueError:
                self.problem = f"record {self.records + 1} has id {row[0]!r}"
                return
            if record_id <= self.last_id:
                self.problem = f"id {record_id} after {self.last_id}"
                return
            self.last_id = record_id
            self.records += 1
            if self.first_record is None:
                self.first_record = row

    def finish(self) -> None:
        if self.problem is None and (self.pending or self.decoder.decode(b"", final=True)):
            self.problem = f"ends mid-record after {self.records} records"


@dataclass
class Credential:
    name: str
    headers: dict[str, str]
    statuses: Counter[str] = field(default_factory=Counter)
    complete: int = 0


# --------------------------------------------------------------------------- the storm


class Storm:
    """The client side: every traffic loop, each bounded by one deadline."""

    def __init__(self, client: httpx.AsyncClient, deadline: float, live_users: int) -> None:
        self.client = client
        self.deadline = deadline
        self.live_users = live_users

    async def _loop(self, attempt: Callable[[], Awaitable[float]]) -> None:
        while time.monotonic() < self.deadline:
            pause = await attempt()
            if pause > 0:
                # A well-behaved client: Retry-After is honoured, capped by the run's end.
                await asyncio.sleep(min(pause, max(0.0, self.deadline - time.monotonic())))

    async def _export(
        self,
        endpoint: Endpoint,
        credential: Credential,
        path: str,
        header: list[str],
        expect: Callable[[CsvCheck], str | None],
    ) -> float:
        started = time.perf_counter()
        first_byte: float | None = None
        check: CsvCheck | None = None
        try:
            async with asyncio.timeout(EXPORT_TIMEOUT_S):
                async with self.client.stream("GET", path, headers=credential.headers) as response:
                    if response.status_code != 200:
                        body = await response.aread()
                        credential.statuses[str(response.status_code)] += 1
                        return endpoint.answered(response, body)
                    check = CsvCheck(header)
                    async for chunk in response.aiter_bytes():
                        if first_byte is None:
                            first_byte = time.perf_counter() - started
                        check.feed(chunk)
                    check.finish()
        except (httpx.HTTPError, TimeoutError) as error:
            credential.statuses["failed"] += 1
            if check is not None:
                endpoint.incomplete += 1  # a 200 whose body was cut off or stalled
            return endpoint.failed(error, time.perf_counter() - started)
        elapsed = time.perf_counter() - started
        credential.statuses["200"] += 1
        endpoint.answered(response, b"")
        endpoint.latencies_s.append(elapsed)
        endpoint.first_byte_s.append(first_byte if first_byte is not None else elapsed)
        problem = check.problem or expect(check)
        if problem is None:
            endpoint.complete += 1
            credential.complete += 1
        else:
            endpoint.incomplete += 1
            endpoint.note(f"incomplete 200 export: {problem}")
        return 0.0

    def _all_users(self, check: CsvCheck) -> str | None:
        if check.records != self.live_users:
            return f"{check.records} records, {self.live_users} live users"
        return None

    def full_exports(self, endpoint: Endpoint, credential: Credential) -> Awaitable[None]:
        return self._loop(
            lambda: self._export(endpoint, credential, EXPORT_FULL, FULL_HEADER, self._all_users)
        )

    def email_exports(
        self, endpoint: Endpoint, credential: Credential, email: str
    ) -> Awaitable[None]:
        def one_row(check: CsvCheck) -> str | None:
            if check.records != 1 or check.first_record is None:
                return f"{check.records} records for one email"
            if check.first_record[1] != email:
                return f"the row has email {check.first_record[1]!r}"
            return None

        path = f"{EXPORT_EMAIL}?email={email}"
        return self._loop(lambda: self._export(endpoint, credential, path, EMAIL_HEADER, one_row))

    async def _call(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        check: Callable[[httpx.Response], str | None] | None = None,
        **kwargs: Any,
    ) -> float:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(OTHER_TIMEOUT_S):
                response = await self.client.request(method, path, **kwargs)
        except (httpx.HTTPError, TimeoutError) as error:
            return endpoint.failed(error, time.perf_counter() - started)
        endpoint.latencies_s.append(time.perf_counter() - started)
        pause = endpoint.answered(response, response.content)
        if response.status_code == 200 and check is not None and (problem := check(response)):
            endpoint.unexpected += 1
            endpoint.note(problem)
        return pause

    def bad_logins(self, endpoint: Endpoint, emails: list[str]) -> Awaitable[None]:
        attempts = itertools.count()

        def attempt() -> Awaitable[float]:
            n = next(attempts)
            form = {"username": emails[n % len(emails)], "password": f"wrong-password-{n}"}
            return self._call(endpoint, "POST", LOGIN, data=form)

        return self._loop(attempt)

    def admin_reads(self, users: Endpoint, keys: Endpoint, admin: Credential) -> Awaitable[None]:
        def page(response: httpx.Response) -> str | None:
            body = response.json()
            if body.get("count") != self.live_users or len(body.get("data", [])) != min(
                100, self.live_users
            ):
                return f"users page: count {body.get('count')}, {len(body.get('data', []))} rows"
            return None

        turns = itertools.count()

        def attempt() -> Awaitable[float]:
            if next(turns) % 2 == 0:
                return self._call(users, "GET", f"{USERS}?limit=100", page, headers=admin.headers)
            return self._call(keys, "GET", API_KEYS, headers=admin.headers)

        return self._loop(attempt)


async def _side_loops(
    pipe: Connection,
    base_url: str,
    duration: float,
    live_users: int,
    admin: Credential,
    login_emails: list[str],
    accept_encoding: str,
) -> dict[str, Any]:
    logins = Endpoint(f"POST {LOGIN} (wrong password)", BAD_LOGIN_LOOPS, [401], limited=True)
    user_pages = Endpoint(f"GET {USERS}?limit=100 (admin)", ADMIN_READ_LOOPS, [200])
    key_lists = Endpoint(f"GET {API_KEYS} (admin)", ADMIN_READ_LOOPS, [200])
    async with httpx.AsyncClient(
        base_url=base_url,
        trust_env=False,
        timeout=OTHER_TIMEOUT_S,
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S),
        headers={"Accept-Encoding": accept_encoding},
    ) as client:
        pipe.send("ready")
        await asyncio.to_thread(pipe.poll, 60)  # "go": the storm starts
        pipe.recv()
        storm = Storm(client, time.monotonic() + duration, live_users)
        loops = [storm.bad_logins(logins, login_emails) for _ in range(BAD_LOGIN_LOOPS)]
        loops += [storm.admin_reads(user_pages, key_lists, admin) for _ in range(ADMIN_READ_LOOPS)]
        await asyncio.gather(*loops)
    return {"endpoints": [asdict(e) for e in (logins, user_pages, key_lists)]}


def side_loops_main(pipe: Connection, *arguments: Any) -> None:
    """Runs in its own process: wrong-password logins and admin reads during the storm
    (`arguments` as `_side_loops` takes them after the pipe)."""
    report_from_child(pipe, _side_loops(pipe, *arguments))


def report_from_child(pipe: Connection, work: Coroutine[Any, Any, dict[str, Any]]) -> None:
    """Run a child process's `work` and send the parent its report, or why it crashed."""
    try:
        pipe.send(asyncio.run(work))
    except KeyboardInterrupt:
        pass
    except Exception as error:  # the parent reports it; a traceback here would be lost
        pipe.send({"crashed": repr(error)})


# --------------------------------------------------------------------------- the monitor


def _process_tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with suppress(OSError):
                todo += [int(child) for child in (task / "children").read_text().split()]
    return pids


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> tuple[int, int]:
    """VmRSS summed over the server and its worker processes, and how many there are."""
    pids = _process_tree(root)
    return sum(_rss_kib(pid) for pid in pids), len(pids)


async def _probe(
    client: httpx.AsyncClient, path: str, endpoint: Endpoint, stop: asyncio.Event
) -> None:
    """One probe every PROBE_EVERY_S, like a load balancer; a timeout counts at full length."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with asyncio.timeout(OTHER_TIMEOUT_S):
                response = await client.get(path)
            endpoint.answered(response, response.content)
        except (httpx.HTTPError, TimeoutError) as error:
            endpoint.failed(error, time.perf_counter() - started)
        elapsed = time.perf_counter() - started
        endpoint.latencies_s.append(elapsed)
        await asyncio.sleep(max(0.0, PROBE_EVERY_S - elapsed))


async def _sample_rss(server_pid: int, stats: dict[str, Any], stop: asyncio.Event) -> None:
    while not stop.is_set():
        kib, processes = tree_rss_kib(server_pid)
        if kib > stats["peak_rss_kib"]:
            stats["peak_rss_kib"], stats["processes_at_peak"] = kib, processes
        await asyncio.sleep(RSS_EVERY_S)


PG_STATES_SQL = (
    "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
    "WHERE datname = $1 AND pid <> pg_backend_pid() GROUP BY 1"
)


async def _sample_pg(dsn: str, database: str, stats: dict[str, Any], stop: asyncio.Event) -> None:
    """Connections to the test database by state, from a connection to another database."""
    connection = await asyncpg.connect(dsn, timeout=OTHER_TIMEOUT_S)
    peak_by_state: Counter[str] = Counter()
    try:
        while not stop.is_set():
            async with asyncio.timeout(OTHER_TIMEOUT_S):
                rows = await connection.fetch(PG_STATES_SQL, database)
            by_state = {state: count for state, count in rows}
            stats["pg_samples"] += 1
            total = sum(by_state.values())
            if total > stats["pg_peak_connections"]:
                stats["pg_peak_connections"], stats["pg_states_at_peak"] = total, by_state
            for state, count in by_state.items():
                peak_by_state[state] = max(peak_by_state[state], count)
            stats["pg_peak_by_state"] = dict(peak_by_state)
            await asyncio.sleep(PG_EVERY_S)
    finally:
        await connection.close()


async def _monitor(
    pipe: Connection, base_url: str, server_pid: int, pg_dsn: str | None, pg_database: str
) -> dict[str, Any]:
    stop = asyncio.Event()
    stats: dict[str, Any] = {"peak_rss_kib": 0, "processes_at_peak": 0}
    stats["rss_at_start_kib"], stats["processes_at_start"] = tree_rss_kib(server_pid)
    if pg_dsn is not None:
        stats.update(pg_samples=0, pg_peak_connections=0, pg_states_at_peak={})
    probes = {
        HEALTH: Endpoint(f"GET {HEALTH}", 1, [200]),
        READY: Endpoint(f"GET {READY}", 1, [200]),
    }
    async with httpx.AsyncClient(
        base_url=base_url, trust_env=False, timeout=OTHER_TIMEOUT_S
    ) as client:
        tasks = [
            asyncio.create_task(_probe(client, path, probe, stop)) for path, probe in probes.items()
        ]
        tasks.append(asyncio.create_task(_sample_rss(server_pid, stats, stop)))
        if pg_dsn is not None:
            tasks.append(asyncio.create_task(_sample_pg(pg_dsn, pg_database, stats, stop)))
        pipe.send("ready")
        # Bounded: the parent says stop when its storm is over, or is gone.
        deadline = time.monotonic() + 3600
        while not pipe.poll() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if any(task.done() and task.exception() for task in tasks):
                break
        stop.set()
        errors = [repr(e) for t in await asyncio.gather(*tasks, return_exceptions=True) if (e := t)]
    return {"probes": [asdict(p) for p in probes.values()], "stats": stats, "errors": errors}


def monitor_main(
    pipe: Connection, base_url: str, server_pid: int, pg_dsn: str | None, pg_database: str
) -> None:
    """Runs in its own process: probe latencies must not include the storm client's CPU time."""
    report_from_child(pipe, _monitor(pipe, base_url, server_pid, pg_dsn, pg_database))


# --------------------------------------------------------------------------- one database


def clean_env(db_url: str) -> dict[str, str]:
    """The server's environment: defaults for every limit, a test secret, nothing inherited.

    REVIEWPOINT_* from the caller's shell are dropped (and commands run in a temporary
    directory, so no `.env` is read): the load test is about the default limits.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWPOINT_")}
    env.update(
        REVIEWPOINT_DB_URL=db_url,
        REVIEWPOINT_ENV="test",
        REVIEWPOINT_JWT_SECRET_KEY=secrets.token_urlsafe(48),
        REVIEWPOINT_LOG_LEVEL="warning",
    )
    return env


@contextmanager
def fresh_database(backend: Backend, pg: Postgres, users: int, tmp: Path) -> Iterator[Database]:
    """A database seeded for this run only, removed afterwards."""
    if backend == "sqlite":
        path = tmp / "loadtest.db"
        url = f"sqlite+aiosqlite:///{path}"
        db = Database("sqlite", users, url, str(path), base_env=clean_env(url))
        log(f"sqlite: seeding {users:,} users into {path}")
        db.seed_s = seed(db, cwd=tmp)
        yield db  # the file goes with the temporary directory
        return
    name = f"rvp_load_{os.getpid()}"
    db = Database("postgresql", users, pg.url(name), name, base_env=clean_env(pg.url(name)))
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg.execute(f'CREATE DATABASE "{name}"')
    try:
        log(f"postgresql: seeding {users:,} users into database {name}")
        db.seed_s = seed(db, cwd=tmp)
        pg.execute("VACUUM (ANALYZE) users", name)  # no request pays for hint bits
        yield db
    finally:
        try:
            pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            log(f"postgresql: could not drop {name}: {error}")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path


@contextmanager
def serve(db: Database, workers: int, tmp: Path) -> Iterator[Server]:
    """`reviewpoint serve` on 127.0.0.1 in its own process group, always stopped with it."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    log_path = CACHE_DIR / f"loadtest-server-{db.backend}.log"
    command = [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)]
    with log_path.open("wb") as server_log:
        process = subprocess.Popen(
            command,
            env=db.env(),
            cwd=tmp,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so its workers can be signalled as one group
        )
        try:
            wait_healthy(process, base_url, log_path)
            yield Server(process, base_url, log_path)
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: uvicorn's graceful shutdown waits for requests still running."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            log(f"server pid {process.pid} still running {wait_s} s after {sig.name}")


def _cli(db: Database, tmp: Path, *args: str) -> str:
    return run([CLI, *args], env=db.env(), cwd=tmp).stdout.strip()


def left_in_transaction(db: Database, pg: Postgres) -> tuple[bool, str]:
    """After the storm and a grace period: is any session still inside a transaction?"""
    if db.backend == "postgresql":
        states = pg.scalar(
            "SELECT coalesce(string_agg(state || ': ' || n, ', '), 'none') FROM "
            "(SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity "
            f"WHERE datname = '{db.name}' GROUP BY 1) s"
        )
        idle = pg.scalar(
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE datname = '{db.name}' AND state LIKE 'idle in transaction%'"
        )
        return idle == "0", f"{idle} idle in transaction (sessions now: {states})"
    # SQLite has no session view; a TRUNCATE checkpoint waits for every reader and
    # writer to leave its transaction (the storm's key use wrote to the WAL), so it
    # completes only if no connection holds a transaction open.
    with sqlite3.connect(db.name, timeout=5) as connection:
        busy, wal_frames, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    connection.close()
    verdict = "blocked by an open transaction" if busy else "completed"
    return busy == 0, f"a TRUNCATE checkpoint {verdict} ({wal_frames} WAL frames left)"


async def run_storm(
    base_url: str,
    duration: float,
    live_users: int,
    keys: list[Credential],
    admin: Credential,
    email_key: Credential,
    email: str,
    login_emails: list[str],
    accept_encoding: str,
) -> tuple[list[Endpoint], float]:
    """Every client loop at once until the deadline; in-flight requests finish (bounded)."""
    full_keys = Endpoint(
        f"GET {EXPORT_FULL} ({len(keys)} API keys)",
        len(keys) * LOOPS_PER_KEY,
        [200],
        limited=True,
        export=True,
    )
    full_admin = Endpoint(
        f"GET {EXPORT_FULL} (admin token)", ADMIN_EXPORT_LOOPS, [200], limited=True, export=True
    )
    by_email = Endpoint(
        f"GET {EXPORT_EMAIL}?email= (API key)", EMAIL_EXPORT_LOOPS, [200], limited=True, export=True
    )
    limits = httpx.Limits(
        max_connections=100, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_EXPIRY_S
    )
    # Logins and admin reads run in a process of their own (as niced): on this
    # event loop their times would include the loop's turns at parsing exports.
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    side = context.Process(
        target=side_loops_main,
        args=(child_end, base_url, duration, live_users, admin, login_emails, accept_encoding),
        daemon=True,
    )
    side.start()
    try:
        if not parent_end.poll(60) or parent_end.recv() != "ready":
            raise RuntimeError("the login and admin-read process did not start within 60 s")
        parent_end.send("go")
        async with httpx.AsyncClient(
            base_url=base_url,
            trust_env=False,
            limits=limits,
            timeout=EXPORT_TIMEOUT_S,
            headers={"Accept-Encoding": accept_encoding},
        ) as client:
            started = time.monotonic()
            storm = Storm(client, started + duration, live_users)
            loops = [
                storm.full_exports(full_keys, key) for key in keys for _ in range(LOOPS_PER_KEY)
            ]
            loops += [storm.full_exports(full_admin, admin) for _ in range(ADMIN_EXPORT_LOOPS)]
            loops += [
                storm.email_exports(by_email, email_key, email) for _ in range(EMAIL_EXPORT_LOOPS)
            ]
            await asyncio.gather(*loops)
            elapsed = time.monotonic() - started
        # Its in-flight requests are bounded by OTHER_TIMEOUT_S.
        if not await asyncio.to_thread(parent_end.poll, OTHER_TIMEOUT_S + 30):
            raise RuntimeError("the login and admin-read process did not report")
        reported = parent_end.recv()
    finally:
        side.join(10)
        if side.is_alive():
            side.terminate()
    if "crashed" in reported:
        raise RuntimeError(f"the login and admin-read process failed: {reported['crashed']}")
    logins, user_pages, key_lists = (Endpoint(**fields) for fields in reported["endpoints"])
    return [full_keys, full_admin, by_email, logins, user_pages, key_lists], elapsed


@contextmanager
def lower_priority() -> Iterator[None]:
    """Run the storm client below the server it measures.

    On a 2-core machine the client (which parses every export as CSV) competes
    with the server for the same cores; at normal priority it would be measuring
    its own load. The probes run in the monitor process at normal priority.
    """
    os.nice(10)
    try:
        yield
    finally:
        with suppress(PermissionError):  # raising priority back needs root
            os.nice(-10)


@contextmanager
def monitoring(server: Server, db: Database, pg: Postgres) -> Iterator[Connection]:
    """The monitor process (probes, RSS, connections), ready before the storm starts."""
    pg_dsn = None
    if db.backend == "postgresql":
        server_url = make_url(pg.url("postgres")).set(drivername="postgresql")
        pg_dsn = server_url.render_as_string(hide_password=False)
    # spawn, not fork: the parent may hold threads and open connections.
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    monitor = context.Process(
        target=monitor_main,
        args=(child_end, server.base_url, server.process.pid, pg_dsn, db.name),
        daemon=True,
    )
    monitor.start()
    try:
        if not parent_end.poll(60):
            raise RuntimeError("the monitor process did not start within 60 s")
        ready = parent_end.recv()
        if ready != "ready":
            raise RuntimeError(f"the monitor process failed: {ready}")
        yield parent_end
    finally:
        if monitor.is_alive():
            monitor.terminate()
        monitor.join(10)


def storm_database(
    backend: Backend,
    pg: Postgres,
    users: int,
    duration: float,
    workers: int,
    accept_encoding: str,
) -> dict[str, Any]:
    """Seed, serve, storm, check what is left, and clean up: one database's result."""
    live_users = users + 1  # the seeded users and the admin
    seed_n = min(123, users)
    with tempfile.TemporaryDirectory(prefix="rvp-loadtest-") as tmp_name:
        tmp = Path(tmp_name)
        with fresh_database(backend, pg, users, tmp) as db:
            admin_email, password = "loadtest-admin@example.com", secrets.token_urlsafe(24)
            _cli(db, tmp, *admin_args(admin_email, password))
            keys = [
                Credential(name, {"X-API-Key": _cli(db, tmp, *key_args(name, "users:export_full"))})
                for name in (f"k{n}" for n in range(1, EXPORT_KEYS + 1))
            ]
            email_key = Credential(
                "k-email", {"X-API-Key": _cli(db, tmp, *key_args("k-email", "users:export"))}
            )
            with serve(db, workers, tmp) as server:
                log(f"{backend}: server pid {server.process.pid} on {server.base_url}")
                token = login(server.base_url, admin_email, password)
                admin = Credential("admin", {"Authorization": f"Bearer {token}"})
                with monitoring(server, db, pg) as monitor:
                    log(f"{backend}: storm for {duration:g} s")
                    with lower_priority():
                        endpoints, elapsed = asyncio.run(
                            run_storm(
                                server.base_url,
                                duration,
                                live_users,
                                keys,
                                admin,
                                email_key,
                                f"seed{seed_n}@seed.example",
                                [admin_email, f"seed{seed_n}@seed.example", "nobody@example.com"],
                                accept_encoding,
                            )
                        )
                    monitor.send("stop")
                    if not monitor.poll(60):
                        raise RuntimeError("the monitor process did not report within 60 s")
                    monitored = monitor.recv()
                if "crashed" in monitored or monitored["errors"]:
                    raise RuntimeError(f"the monitor failed: {monitored}")
                log(f"{backend}: storm over after {elapsed:.1f} s; {IDLE_GRACE_S:g} s grace")
                time.sleep(IDLE_GRACE_S)
                idle_ok, idle_detail = left_in_transaction(db, pg)
                server_errors = _error_lines(server.log_path)
                server_times = server_side_p99(server.base_url)
    endpoints += [Endpoint.from_dict(probe) for probe in monitored["probes"]]
    credentials = [*keys, admin, email_key]
    return {
        "backend": backend,
        "users": users,
        "live_users": live_users,
        "duration_s": duration,
        "storm_s": elapsed,
        "workers": workers,
        "accept_encoding": accept_encoding,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "endpoints": [asdict(endpoint) for endpoint in endpoints],
        "credentials": [
            {"name": c.name, "statuses": dict(c.statuses), "complete": c.complete}
            for c in credentials
        ],
        "server": monitored["stats"],
        "server_side_p99_s": server_times,
        "server_log_error_lines": server_errors,
        "criteria": evaluate(endpoints, credentials, idle_ok, idle_detail),
    }


def server_side_p99(base_url: str) -> dict[str, dict[str, float]]:
    """Per route, the request count and the p99 of the server's own timing (/metrics).

    The storm client runs niced on the same cores and parses every export, so
    its latencies include its own waits; the server's histogram does not (an
    export's still includes a client that reads slowly). The p99 is the upper
    bound of the bucket holding it.
    """
    text = httpx.get(f"{base_url}/metrics", timeout=OTHER_TIMEOUT_S, trust_env=False).text
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "reviewpoint_http_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                label = f"{sample.labels['method']} {sample.labels['route']}"
                buckets.setdefault(label, []).append((float(sample.labels["le"]), sample.value))
    result = {}
    for label, counts in buckets.items():
        counts.sort()
        total = counts[-1][1]
        if total:
            p99 = next(bound for bound, count in counts if count >= 0.99 * total)
            result[label] = {"requests": total, "p99_at_most_s": p99}
    return result


def admin_args(email: str, password: str) -> list[str]:
    command = ["users", "create", "--admin", "--email", email, "--name", "Load Admin"]
    return [*command, "--password", password]


def key_args(name: str, scope: str) -> list[str]:
    return ["api-keys", "create", "--name", name, "--scope", scope]


def login(base_url: str, email: str, password: str) -> str:
    response = httpx.post(
        base_url + LOGIN,
        data={"username": email, "password": password},
        trust_env=False,
        timeout=OTHER_TIMEOUT_S,
    )
    if response.status_code != 200:
        raise RuntimeError(f"admin login answered {response.status_code}: {response.text}")
    token: str = response.json()["access_token"]
    return token


def _error_lines(log_path: Path) -> list[str]:
    """The server log's tracebacks and errors: the first place to look when a check fails."""
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if "Traceback" in line or "ERROR" in line][:20]


# --------------------------------------------------------------------------- verdict and report


def evaluate(
    endpoints: list[Endpoint], credentials: list[Credential], idle_ok: bool, idle_detail: str
) -> list[dict[str, Any]]:
    """The issue's pass criteria, each with what was seen."""
    criteria: list[dict[str, Any]] = []

    def add(name: str, ok: bool, detail: str) -> None:
        criteria.append({"criterion": name, "pass": ok, "detail": detail})

    def where(count: Callable[[Endpoint], int]) -> str:
        hits = [f"{e.label}: {count(e)}" for e in endpoints if count(e)]
        return "; ".join(hits) or "none"

    add("zero 5xx", not any(e.server_errors for e in endpoints), where(lambda e: e.server_errors))
    add(
        "no request failed (timeout, connection error, cut-off body)",
        not any(e.failures for e in endpoints),
        where(lambda e: e.failures),
    )
    misplaced = where(lambda e: 0 if e.limited else e.too_many)
    bad_retry = where(lambda e: e.retry_after_bad)
    add(
        "429 only where a limit says so, always with Retry-After >= 1",
        misplaced == "none" and bad_retry == "none",
        f"429 where no limit applies: {misplaced}; without a valid Retry-After: {bad_retry}; "
        f"429s: {where(lambda e: e.too_many)}",
    )
    add(
        "every other answer is the endpoint's normal one (200, or 401 for a wrong password)",
        not any(e.unexpected for e in endpoints),
        where(lambda e: e.unexpected),
    )
    exports = [e for e in endpoints if e.export]
    complete = sum(e.complete for e in exports)
    incomplete = sum(e.incomplete for e in exports)
    add(
        "every 200 export complete and in order",
        incomplete == 0 and complete > 0,
        f"{complete} complete, {incomplete} incomplete",
    )
    for probe in endpoints[-2:]:
        p99 = percentile(probe.latencies_s, 0.99)
        add(
            f"{probe.label} p99 under {PROBE_P99_MAX_S * 1000:.0f} ms",
            p99 is not None and p99 < PROBE_P99_MAX_S,
            f"p99 {_ms(p99)} over {len(probe.latencies_s)} probes",
        )
    starved = [c.name for c in credentials if c.complete == 0]
    add(
        "every credential gets exports through",
        not starved,
        ", ".join(f"{c.name}: {c.complete}" for c in credentials)
        + (f" (none for {', '.join(starved)})" if starved else ""),
    )
    add("nothing left idle in transaction afterwards", idle_ok, idle_detail)
    return criteria


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f} ms"


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{status} x{count:,}" for status, count in sorted(statuses.items())) or "-"


def render(result: dict[str, Any]) -> str:
    """Markdown for one database: traffic per endpoint, server figures, the verdict."""
    endpoints = [Endpoint.from_dict(e) for e in result["endpoints"]]
    storm_s = result["storm_s"]
    name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[result["backend"]]
    lines = [
        f"### {name}: {result['users']:,} users, {result['duration_s']:g} s storm "
        f"({storm_s:.1f} s with the last requests), {result['workers']} worker(s), "
        f"Accept-Encoding: {result.get('accept_encoding', 'gzip')}",
        "",
        "| endpoint | loops | requests | req/s | statuses | p50 | p99 | first byte p50 / p99 "
        "| 200 exports complete |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in endpoints:
        first_byte = (
            f"{_ms(percentile(e.first_byte_s, 0.5))} / {_ms(percentile(e.first_byte_s, 0.99))}"
            if e.export
            else "-"
        )
        complete = f"{e.complete:,} / {e.complete + e.incomplete:,}" if e.export else "-"
        lines.append(
            f"| `{e.label}` | {e.loops} | {e.requests:,} | {e.requests / storm_s:,.1f} "
            f"| {_statuses(e.statuses)} | {_ms(percentile(e.latencies_s, 0.5))} "
            f"| {_ms(percentile(e.latencies_s, 0.99))} | {first_byte} | {complete} |"
        )
    server = result["server"]
    limited = [e for e in endpoints if e.too_many]
    lines += [
        "",
        "Export latencies are of 200s, to the last byte; other latencies are of every answer.",
        "",
        "- credentials (200 exports complete; statuses): "
        + "; ".join(
            f"{c['name']} {c['complete']:,} ({_statuses(c['statuses'])})"
            for c in result["credentials"]
        ),
        "- 429 answers: "
        + (
            "; ".join(
                f"{e.label}: {e.too_many:,}, {e.too_many - e.retry_after_bad:,} "
                f"with a valid Retry-After, {e.ratelimit_headers:,} with RateLimit headers"
                for e in limited
            )
            or "none"
        ),
        f"- server peak RSS {server['peak_rss_kib'] / 1024:,.1f} MB over "
        f"{server['processes_at_peak']} process(es) "
        f"({server['rss_at_start_kib'] / 1024:,.1f} MB at the start)",
    ]
    if "pg_peak_connections" in server:
        lines.append(
            f"- PostgreSQL connections to the test database: peak {server['pg_peak_connections']} "
            f"({_statuses(server['pg_states_at_peak'])}); highest per state "
            f"{_statuses(server.get('pg_peak_by_state', {}))}; {server['pg_samples']} samples"
        )
    if result.get("server_side_p99_s"):
        lines.append(
            "- the server's own p99 per route (its /metrics histogram; at most this bucket): "
            + "; ".join(
                f"`{label}` {_ms(times['p99_at_most_s'])} ({times['requests']:,.0f} requests)"
                for label, times in sorted(result["server_side_p99_s"].items())
            )
        )
    if result["server_log_error_lines"]:
        lines.append(
            f"- server log: {len(result['server_log_error_lines'])} error line(s), first: "
            f"`{result['server_log_error_lines'][0][:200]}`"
        )
    for e in endpoints:
        for sample, times in e.samples.items():
            lines.append(f"- seen on `{e.label}` ({times:,}x): {sample}")
    lines += ["", "| criterion | result | detail |", "| --- | --- | --- |"]
    for c in result["criteria"]:
        lines.append(
            f"| {c['criterion']} | {'PASS' if c['pass'] else '**FAIL**'} | {c['detail']} |"
        )
    return "\n".join(lines)


def render_summary(results: list[dict[str, Any]]) -> str:
    """The README's 'Under load' table: one column per database."""
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, value: Callable[[dict[str, Any], dict[str, Endpoint]], str]) -> None:
        cells = []
        for result in results:
            by_label = {e["label"]: Endpoint.from_dict(e) for e in result["endpoints"]}
            cells.append(value(result, by_label))
        rows.append((label, cells))

    def full(eps: dict[str, Endpoint]) -> list[Endpoint]:
        return [e for label, e in eps.items() if label.startswith(f"GET {EXPORT_FULL}")]

    def latency(eps: list[Endpoint], share: float, first_byte: bool = False) -> str:
        values = [v for e in eps for v in (e.first_byte_s if first_byte else e.latencies_s)]
        return _ms(percentile(values, share))

    def one(eps: dict[str, Endpoint], prefix: str) -> Endpoint:
        return next(e for label, e in eps.items() if label.startswith(prefix))

    row(
        "full exports completed (3 keys and an admin), per second",
        lambda r, eps: f"{sum(e.complete for e in full(eps)) / r['storm_s']:.2f}",
    )
    row(
        "full export p50 / p99 (to the last byte)",
        lambda r, eps: f"{latency(full(eps), 0.5)} / {latency(full(eps), 0.99)}",
    )
    row("full export first byte p99", lambda r, eps: latency(full(eps), 0.99, first_byte=True))
    row(
        "email export p99",
        lambda r, eps: latency([one(eps, f"GET {EXPORT_EMAIL}?")], 0.99),
    )
    row(
        "wrong-password logins: statuses",
        lambda r, eps: _statuses(one(eps, f"POST {LOGIN}").statuses),
    )
    row(
        "admin reads p99 (users page / key list)",
        lambda r, eps: (
            f"{latency([one(eps, f'GET {USERS}?')], 0.99)} / "
            f"{latency([one(eps, f'GET {API_KEYS}')], 0.99)}"
        ),
    )
    row(f"`{HEALTH}` p99", lambda r, eps: latency([eps[f"GET {HEALTH}"]], 0.99))
    row(f"`{READY}` p99", lambda r, eps: latency([eps[f"GET {READY}"]], 0.99))
    row(
        "429 answers (all with Retry-After)",
        lambda r, eps: (
            f"{sum(e.too_many for e in eps.values()):,} "
            f"({'yes' if not any(e.retry_after_bad for e in eps.values()) else 'NO'})"
        ),
    )
    row(
        "5xx / failed requests",
        lambda r, eps: (
            f"{sum(e.server_errors for e in eps.values()):,} / "
            f"{sum(e.failures for e in eps.values()):,}"
        ),
    )
    row("server peak RSS", lambda r, eps: f"{r['server']['peak_rss_kib'] / 1024:,.0f} MB")
    row(
        "PostgreSQL connections in use, peak",
        lambda r, eps: str(r["server"].get("pg_peak_connections", "-")),
    )
    row(
        "pass criteria",
        lambda r, eps: (
            "all pass"
            if all(c["pass"] for c in r["criteria"])
            else f"{sum(not c['pass'] for c in r['criteria'])} FAIL"
        ),
    )
    header = " | ".join(names[r["backend"]] for r in results)
    first = results[0]
    lines = [
        f'For the README ("Under load"): {first["users"]:,} users, '
        f"{first['duration_s']:g} s, {first['workers']} worker(s)",
        "",
        f"| | {header} |",
        "| --- |" + " --- |" * len(results),
    ]
    lines += [f"| {label} | {' | '.join(cells)} |" for label, cells in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Storm the service and check it holds.")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--users", type=int, default=100_000, help="users to seed")
    parser.add_argument("--duration", type=float, default=30.0, help="storm seconds per database")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--json", type=Path, help="write the raw report here")
    parser.add_argument(
        "--accept-encoding",
        default="gzip",
        help="every client's Accept-Encoding (default gzip, as httpx, requests and browsers "
        "send; identity for uncompressed responses)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"),
        help="PostgreSQL server (on this machine) for the test database (env BENCH_PG_URL)",
    )
    args = parser.parse_args(argv)
    if args.users < 1 or not 0 < args.duration <= 3600 or not 1 <= args.workers <= 16:
        parser.error("--users must be >= 1, --duration in (0, 3600], --workers in 1..16")
    if make_url(args.pg_url).host not in ("127.0.0.1", "localhost", None):
        parser.error("--pg-url must point at 127.0.0.1: the load test stays on this machine")
    backends: list[Backend] = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if "postgresql" in backends and shutil.which("psql") is None:
        parser.error("psql is not on PATH")

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so every `finally` stops servers and drops databases

    signal.signal(signal.SIGTERM, interrupted)
    pg = Postgres(args.pg_url)
    results, broken = [], []
    for backend in backends:
        try:
            result = storm_database(
                backend, pg, args.users, args.duration, args.workers, args.accept_encoding
            )
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            log(f"{backend}: FAILED to run: {error}")
            broken.append(backend)
            continue
        results.append(result)
        print(render(result) + "\n", flush=True)
    if results:
        print(render_summary(results), flush=True)
    if args.json is not None:
        report = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"raw report in {args.json}")
    failed = [
        f"{r['backend']}: {c['criterion']}" for r in results for c in r["criteria"] if not c["pass"]
    ]
    for failure in failed:
        log(f"FAIL {failure}")
    return 1 if failed or broken else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Every context manager on the way out has stopped its server or dropped its database.
        log("interrupted; servers stopped, databases and temporary files removed")
        sys.exit(130)
