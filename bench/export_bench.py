"""Export benchmark: the HTTP export against the database's own dump of the same rows.

    python bench/export_bench.py [--db sqlite|postgresql|both] [--users N] [--repeat R]

Everything goes through the project's real entry points (the `reviewpoint` CLI to
migrate, seed, issue a key and serve; `curl` as the client), so the numbers are
what an operator gets. See bench/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import (
    BENCH_DIR,
    CLI,
    ROOT,
    STEP_TIMEOUT_S,
    Backend,
    Database,
    Postgres,
    free_port,
    logger,
    run,
    seed,
    status_kib,
    wait_healthy,
)

CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"
COLUMNS = "id, email, name, created_at, updated_at, is_active, is_admin"
EXPORT_PATH = "/api/v1/users/export-full"
DEFAULT_CHUNK_ROWS = 10_000  # config.Settings.export_chunk_rows
DEFAULT_CONNECTIONS = 2  # config.Settings.export_connections (PostgreSQL only)

# Targets from the issue; printed next to the measurements.
TARGET_RATIO: dict[Backend, float] = {"postgresql": 1.5, "sqlite": 2.5}
TARGET_NDJSON_RATIO = 1.5  # NDJSON export / the database writing the same JSON itself
TARGET_XLSX_ROWS_S = 200_000
TARGET_GZIP_RATIO = 1.5  # the gzipped export / the plain one
TARGET_ANONYMIZED_RATIO = 2.0  # the anonymized export / the plain one
TARGET_FILTERED_P50_S = 0.020  # an export of 10 rows out of N, over HTTP
FILTERED_REQUESTS = 50
TARGET_RSS_MB = 50.0
TARGET_FIRST_BYTE_S = 0.200
TARGET_HEALTH_S = 0.100
CONCURRENT_EXPORTS = 4
# This bench measures one export's speed, and health while CONCURRENT_EXPORTS run
# with one key: the admission limits (what `make loadtest` measures) are lifted
# so they answer no 429. A test env signs tokens with a random key. Variables
# already in the environment win.
SERVER_DEFAULTS = {
    "REVIEWPOINT_ENV": "test",
    "REVIEWPOINT_EXPORT_RATE_LIMIT": "10000/minute",
    "REVIEWPOINT_EXPORT_MAX_CONCURRENT": str(CONCURRENT_EXPORTS),
    "REVIEWPOINT_EXPORT_MAX_CONCURRENT_PER_CREDENTIAL": str(CONCURRENT_EXPORTS),
    # A fixed key: the same pseudonyms on every run (a test env would draw one).
    "REVIEWPOINT_ANONYMIZE_KEY": "bench-anonymize-key-not-a-secret-0123456789",
}

SAMPLE_EVERY_S = 0.02

MIB = 1024 * 1024


log = logger("bench")


def _live_users_sqlite(path: Path) -> int | None:
    if not path.exists():
        return None
    result = subprocess.run(
        ["sqlite3", str(path), "SELECT count(*) FROM users WHERE is_deleted = 0"],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
    )
    return int(result.stdout) if result.returncode == 0 and result.stdout.strip() else None


def prepare_sqlite(users: int) -> Database:
    """A cached file per N; reseeded only if it does not hold exactly N live users."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"sqlite-{users}.db"
    db = Database("sqlite", users, f"sqlite+aiosqlite:///{path}", str(path))
    if _live_users_sqlite(path) == users:
        run([CLI, "db", "upgrade"], env=db.env())  # cheap; keeps a cached file on head
        log(f"sqlite: reusing {path.name} ({users:,} live users)")
        return db
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    log(f"sqlite: seeding {users:,} users into {path.name}")
    db.seed_s = seed(db)
    log(f"sqlite: seeded {users:,} users in {db.seed_s:.1f} s")
    if _live_users_sqlite(path) != users:
        raise RuntimeError(f"{path} does not hold {users} live users after seeding")
    return db


def prepare_postgres(pg: Postgres, users: int) -> Database:
    """A database `rvp_bench_<N>`, reused if it holds exactly N live users, else recreated."""
    name = f"rvp_bench_{users}"
    db = Database("postgresql", users, pg.url(name), name)
    exists = pg.scalar(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1"
    if exists:
        try:
            live = int(pg.scalar("SELECT count(*) FROM users WHERE is_deleted = false", name))
        except (RuntimeError, ValueError):
            live = -1
        if live == users:
            run([CLI, "db", "upgrade"], env=db.env())
            log(f"postgresql: reusing database {name} ({users:,} live users)")
            return db
    log(f"postgresql: seeding {users:,} users into database {name}")
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg.execute(f'CREATE DATABASE "{name}"')
    db.seed_s = seed(db)
    log(f"postgresql: seeded {users:,} users in {db.seed_s:.1f} s")
    # Set hint bits and statistics now, so no timed run pays for them.
    pg.execute("VACUUM (ANALYZE) users", name)
    return db


# --------------------------------------------------------------------------- server


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    key: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        return status_kib(self.pid, "VmRSS")

    def connection(self) -> http.client.HTTPConnection:
        """A keep-alive connection, so each request times the server, not a handshake."""
        address = urllib.parse.urlsplit(self.base_url)
        return http.client.HTTPConnection(address.hostname or "", address.port, timeout=5)


@contextmanager
def serve(db: Database) -> Iterator[Server]:
    """`reviewpoint serve` on 127.0.0.1 as a subprocess; always terminated on the way out."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = CACHE_DIR / f"server-{db.backend}-{db.users}.log"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as server_log:
        process = subprocess.Popen(
            [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**SERVER_DEFAULTS, **db.env()},
            cwd=ROOT,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_healthy(process, base_url, log_path)
            key = run(
                [CLI, "api-keys", "create", "--name", "bench", "--scope", "users:export_full"],
                env=db.env(),
            ).stdout.strip()
            yield Server(process, base_url, key)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


class RssSampler:
    """Polls a process's VmRSS in a thread: the peak during a run, against the value before."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before_kib = status_kib(pid, "VmRSS")
        self.peak_kib = self.before_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S + 60
        while not self._stop.wait(SAMPLE_EVERY_S) and time.monotonic() < deadline:
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))

    @property
    def growth_mb(self) -> float:
        return (self.peak_kib - self.before_kib) / 1024


# --------------------------------------------------------------------------- measurements


@dataclass
class Way:
    """One way of exporting and its runs (lists hold one value per timed run)."""

    label: str
    rows: int
    wall_s: list[float] = field(default_factory=list)
    first_byte_s: list[float] = field(default_factory=list)
    rss_growth_mb: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def first_byte(self) -> float | None:
        return statistics.median(self.first_byte_s) if self.first_byte_s else None

    @property
    def rss_growth(self) -> float | None:
        """The worst run, untimed ones included: memory is a ceiling, not an average."""
        growth = self.rss_growth_mb + self.notes.get("untimed_rss_growth_mb", [])
        return max(growth) if growth else None

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median_wall_s": self.wall,
            "rows_per_s": self.rows / self.wall,
            "median_first_byte_s": self.first_byte,
            "max_rss_growth_mb": self.rss_growth,
        }


def http_export(
    server: Server,
    way: Way,
    *,
    query: str = "",
    output: str = os.devnull,
    record: bool = True,
    compressed: bool = False,
) -> None:
    """One download with curl (`query`: `format=...`), the server's RSS sampled meanwhile.

    `compressed`: curl asks for gzip and decompresses, as `curl --compressed`.
    """
    write_out = "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"
    command = ["curl", "-s", "-o", output, "-w", write_out, "--max-time", str(STEP_TIMEOUT_S)]
    if compressed:
        command.append("--compressed")
    url = server.base_url + EXPORT_PATH + (f"?{query}" if query else "")
    command += ["-H", f"X-API-Key: {server.key}", url]
    with RssSampler(server.pid) as rss:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S + 30,
            check=False,
        )
    status, first_byte, total, size = result.stdout.split()
    if result.returncode != 0 or status != "200":
        raise RuntimeError(f"curl exit {result.returncode}, HTTP {status}: {result.stderr}")
    if not record:
        way.notes.setdefault("untimed_rss_growth_mb", []).append(round(rss.growth_mb, 1))
        return
    way.wall_s.append(float(total))
    way.first_byte_s.append(float(first_byte))
    way.bytes.append(int(size))
    way.rss_growth_mb.append(rss.growth_mb)
    way.notes.setdefault("server_rss_before_mb", []).append(round(rss.before_kib / 1024, 1))


def health_under_load(server: Server, exports: int = CONCURRENT_EXPORTS) -> dict[str, Any]:
    """`/api/v1/health` latency while `exports` full downloads run at once.

    A stalled event loop would show here first: liveness waits behind any
    blocking work the exports do in the server's one event loop.
    """
    command = ["curl", "-s", "-o", os.devnull, "-w", "%{http_code}"]
    command += ["--max-time", str(STEP_TIMEOUT_S), "-H", f"X-API-Key: {server.key}"]
    downloads = [
        subprocess.Popen(
            [*command, server.base_url + EXPORT_PATH],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(exports)
    ]
    latencies: list[float] = []
    connection = server.connection()
    deadline = time.monotonic() + STEP_TIMEOUT_S
    try:
        time.sleep(0.05)  # let the exports get going
        while any(d.poll() is None for d in downloads) and time.monotonic() < deadline:
            started = time.perf_counter()
            connection.request("GET", "/api/v1/health")
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"health answered {response.status} under load")
            time.sleep(0.02)
    finally:
        connection.close()
        for download in downloads:
            if download.poll() is None:
                download.kill()
            status, _ = download.communicate(timeout=30)
            if download.returncode != 0 or status != "200":
                raise RuntimeError(f"concurrent export: curl exit {download.returncode}, {status}")
    if not latencies:
        raise RuntimeError("the exports ended before health could be asked once")
    ordered = sorted(latencies)
    return {
        "exports": exports,
        "samples": len(latencies),
        "max_s": ordered[-1],
        "p99_s": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "median_s": statistics.median(ordered),
    }


def dump_command(db: Database, pg: Postgres | None) -> list[str]:
    """The database's own CSV dump of the export's rows and columns, in id order."""
    if db.backend == "sqlite":
        query = f"SELECT {COLUMNS} FROM users WHERE is_deleted = 0 ORDER BY id"
        return ["sqlite3", "-csv", "-header", db.name, query]
    assert pg is not None
    query = f"SELECT {COLUMNS} FROM users WHERE is_deleted = false ORDER BY id"
    return [*pg.args, "-d", db.name, "-c", f"\\copy ({query}) TO STDOUT WITH CSV HEADER"]


def db_dump(command: list[str], env: dict[str, str], way: Way, *, record: bool = True) -> None:
    with open(os.devnull, "w") as devnull:
        started = time.perf_counter()
        run(command, env=env, stdout=devnull)
        wall = time.perf_counter() - started
    if record:
        way.wall_s.append(wall)


# The database writing the NDJSON export's exact document itself, with its own
# JSON functions: the same keys, `Z` timestamps and true/false. PostgreSQL's
# COPY in CSV mode with control characters as quote and delimiter passes each
# line through untouched (its text mode would double JSON's backslashes).
_SQLITE_SAME_JSON = (
    "SELECT json_object('id', id, 'email', email, 'name', name, "
    "'created_at', strftime('%Y-%m-%dT%H:%M:%SZ', created_at), "
    "'updated_at', strftime('%Y-%m-%dT%H:%M:%SZ', updated_at), "
    "'is_active', json(iif(is_active, 'true', 'false')), "
    "'is_admin', json(iif(is_admin, 'true', 'false'))) "
    "FROM users WHERE is_deleted = 0 ORDER BY id"
)
_PG_Z = "to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS {0}"
_PG_SAME_JSON = (
    "SELECT row_to_json(t) FROM (SELECT id, email, name, "
    f"{_PG_Z.format('created_at')}, {_PG_Z.format('updated_at')}, is_active, is_admin "
    "FROM users WHERE is_deleted = false ORDER BY id) t"
)


def json_dump_command(db: Database, pg: Postgres | None) -> list[str]:
    """The database's own NDJSON of the export's rows: byte for byte the export's."""
    if db.backend == "sqlite":
        return ["sqlite3", db.name, _SQLITE_SAME_JSON]
    assert pg is not None
    options = "(FORMAT csv, DELIMITER e'\\x02', QUOTE e'\\x01')"
    return [*pg.args, "-d", db.name, "-c", f"\\copy ({_PG_SAME_JSON}) TO STDOUT {options}"]


def _sha256(command: list[str], env: dict[str, str]) -> str:
    digest = hashlib.sha256()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE) as process:
        output = process.stdout
        assert output is not None
        for block in iter(lambda: output.read(MIB), b""):
            digest.update(block)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {process.returncode}")
    return digest.hexdigest()


def verify_formats(
    server: Server, ndjson: Way, xlsx: Way, json_dump: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """NDJSON: N lines, byte-identical to the database's own; XLSX: N rows in its sheets."""
    with tempfile.TemporaryDirectory(prefix="rvp-bench-") as tmp:
        path = Path(tmp) / "export.ndjson"
        http_export(server, ndjson, query="format=ndjson", output=str(path), record=False)
        digest = hashlib.sha256()
        lines = 0
        with path.open("rb") as raw:
            for block in iter(lambda: raw.read(MIB), b""):
                digest.update(block)
                lines += block.count(b"\n")
        book = Path(tmp) / "export.xlsx"
        http_export(server, xlsx, query="format=xlsx", output=str(book), record=False)
        rows = 0
        with zipfile.ZipFile(book) as archive:
            for name in archive.namelist():
                if name.startswith("xl/worksheets/"):
                    with archive.open(name) as sheet:
                        # A tag split between two blocks is counted once: the
                        # carried bytes are too few to hold a whole one.
                        carry = b""
                        for block in iter(lambda: sheet.read(MIB), b""):
                            data = carry + block
                            rows += data.count(b"<row>")
                            carry = data[-(len(b"<row>") - 1) :]
                    rows -= 1  # its header
    if lines != ndjson.rows or rows != xlsx.rows:
        raise RuntimeError(f"NDJSON has {lines} lines and XLSX {rows} rows, not {ndjson.rows}")
    return {
        "ndjson_lines": lines,
        "ndjson_identical_to_database_json": digest.hexdigest() == _sha256(json_dump, env),
        "xlsx_rows": rows,
        "xlsx_bytes": book.stat().st_size if book.exists() else None,
    }


def filtered_latency(server: Server, query: str, expected_rows: int) -> dict[str, Any]:
    """Latency of a small filtered export, to its last byte, on one keep-alive connection."""
    connection = server.connection()
    latencies = []
    try:
        for _ in range(FILTERED_REQUESTS):
            started = time.perf_counter()
            connection.request("GET", f"{EXPORT_PATH}?{query}", headers={"X-API-Key": server.key})
            response = connection.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - started)
            rows = response.getheader("X-Export-Rows")
            if response.status != 200 or rows != str(expected_rows):
                raise RuntimeError(f"filtered export: HTTP {response.status}, {rows} rows")
            if body.count(b"\r\n") != expected_rows + 1:
                raise RuntimeError("filtered export: the body does not hold X-Export-Rows records")
    finally:
        connection.close()
    ordered = sorted(latencies)
    return {
        "query": query,
        "rows": expected_rows,
        "requests": len(ordered),
        "p50_s": statistics.median(ordered),
        "p99_s": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


def in_memory(db: Database, way: Way) -> str:
    """The seed-style baseline in its own process; returns the SHA-256 of its CSV."""
    script = str(BENCH_DIR / "inmemory_baseline.py")
    result = run([sys.executable, script, "--db-url", db.url], env=db.env())
    report = json.loads(result.stdout)
    if report["rows"] != db.users:
        raise RuntimeError(f"in-memory baseline read {report['rows']} rows, not {db.users}")
    way.wall_s.append(report["wall_s"])
    way.bytes.append(report["bytes"])
    way.rss_growth_mb.append((report["peak_rss_kib"] - report["rss_before_kib"]) / 1024)
    way.notes.setdefault("peak_rss_mb", []).append(round(report["peak_rss_kib"] / 1024, 1))
    sha: str = report["sha256"]
    return sha


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        for block in iter(lambda: raw.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_gzip(server: Server, way: Way, plain_sha256: str) -> bool:
    """`curl --compressed` writes exactly the plain download's bytes."""
    with tempfile.TemporaryDirectory(prefix="rvp-bench-") as tmp:
        path = Path(tmp) / "export.csv"
        http_export(server, way, output=str(path), record=False, compressed=True)
        return _file_sha256(path) == plain_sha256


def verify_anonymized(server: Server, way: Way) -> dict[str, Any]:
    """Download `?anonymize=true` once: every record there, every email a pseudonym, all distinct.

    The issue's uniqueness check: on the full run, 1,000,000 users and no collision.
    """
    with tempfile.TemporaryDirectory(prefix="rvp-bench-") as tmp:
        path = Path(tmp) / "export.csv"
        http_export(server, way, query="anonymize=true", output=str(path), record=False)
        with path.open(newline="", encoding="utf-8") as text:
            reader = csv.reader(text)
            header = next(reader)
            emails = [record[1] for record in reader]
    if header != COLUMNS.split(", ") or len(emails) != way.rows:
        raise RuntimeError(f"anonymized export has header {header} and {len(emails)} records")
    pseudonyms = sum(1 for email in emails if email.endswith("@example.invalid"))
    return {
        "anonymized_records": len(emails),
        "anonymized_distinct_emails": len(set(emails)),
        "anonymized_all_pseudonyms": pseudonyms == len(emails),
    }


def verify_download(server: Server, way: Way) -> dict[str, Any]:
    """Download once to a file and parse it: N records plus the header, nothing cut off.

    Untimed (it writes a real file), but its RSS growth counts: it is the cold run.
    """
    users = way.rows
    with tempfile.TemporaryDirectory(prefix="rvp-bench-") as tmp:
        path = Path(tmp) / "export.csv"
        http_export(server, way, output=str(path), record=False)
        digest = hashlib.sha256()
        with path.open("rb") as raw:
            for block in iter(lambda: raw.read(MIB), b""):
                digest.update(block)
        with path.open(newline="", encoding="utf-8") as text:
            reader = csv.reader(text)
            header = next(reader)
            records = sum(1 for _ in reader)
        size = path.stat().st_size
    if header != COLUMNS.split(", ") or records != users:
        raise RuntimeError(f"export has header {header} and {records} records, not {users}")
    return {"records": records + 1, "bytes": size, "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------- one backend


def bench_backend(
    backend: Backend, pg: Postgres | None, users: int, small: int, repeat: int
) -> dict[str, Any]:
    """Seed (or reuse), then export, dump and load-everything side by side, R times each."""
    if backend == "sqlite":
        db, small_db = prepare_sqlite(users), prepare_sqlite(small)
    else:
        assert pg is not None
        db, small_db = prepare_postgres(pg, users), prepare_postgres(pg, small)

    dump_tool = "sqlite3 -csv" if backend == "sqlite" else "psql \\copy"
    export = Way("HTTP export-full (curl)", users)
    dump = Way(f"{dump_tool} (database dump)", users)
    memory = Way("in-memory ORM + csv (seed style)", users)
    small_export = Way(f"HTTP export-full, {small:,} users", small)
    ndjson = Way("HTTP export-full ?format=ndjson", users)
    json_tool = "sqlite3 json_object" if backend == "sqlite" else "psql \\copy row_to_json"
    json_dump = Way(f"{json_tool} (same NDJSON)", users)
    xlsx = Way("HTTP export-full ?format=xlsx", users)
    gzipped = Way("HTTP export-full, gzip", users)
    anonymized = Way("HTTP export-full ?anonymize=true", users)
    dump_env = db.env() if pg is None else pg.env
    command = dump_command(db, pg)
    json_command = json_dump_command(db, pg)
    # Seeded admins are the users whose number is a multiple of 1,000 (`users/seed.py`):
    # ten of them come after this id.
    filtered_query = f"is_admin=true&after_id={max(0, users - 10_000)}"
    filtered_rows = min(10, users // 1000)

    with serve(db) as server:
        log(f"{backend}: server pid {server.pid} on {server.base_url}")
        started_rss = server.rss_kib()
        verification = verify_download(server, export)  # also warms both caches
        verification.update(verify_formats(server, ndjson, xlsx, json_command, dump_env))
        verification["gzip_identical"] = verify_gzip(server, gzipped, verification["sha256"])
        verification.update(verify_anonymized(server, anonymized))
        db_dump(command, dump_env, dump, record=False)  # warm-up
        sha_memory = ""
        for index in range(repeat):
            log(f"{backend}: run {index + 1}/{repeat}")
            http_export(server, export)
            db_dump(command, dump_env, dump)
            http_export(server, ndjson, query="format=ndjson")
            db_dump(json_command, dump_env, json_dump)
            http_export(server, xlsx, query="format=xlsx")
            http_export(server, gzipped, compressed=True)
            http_export(server, anonymized, query="anonymize=true")
            sha_memory = in_memory(db, memory)
            log(
                f"{backend}: export {export.wall_s[-1]:.2f} s, dump {dump.wall_s[-1]:.2f} s, "
                f"ndjson {ndjson.wall_s[-1]:.2f} s, its dump {json_dump.wall_s[-1]:.2f} s, "
                f"xlsx {xlsx.wall_s[-1]:.2f} s, gzip {gzipped.wall_s[-1]:.2f} s, "
                f"anonymized {anonymized.wall_s[-1]:.2f} s, "
                f"in-memory {memory.wall_s[-1]:.2f} s"
            )
        log(f"{backend}: {filtered_query} x{FILTERED_REQUESTS}")
        filtered = filtered_latency(server, filtered_query, filtered_rows)
        log(f"{backend}: {CONCURRENT_EXPORTS} exports at once, sampling /api/v1/health")
        health = health_under_load(server)
        export.notes["server_hwm_mb"] = round(status_kib(server.pid, "VmHWM") / 1024, 1)
        export.notes["server_rss_at_start_mb"] = round(started_rss / 1024, 1)

    with serve(small_db) as server:
        http_export(server, small_export, record=False)  # warm-up, growth kept in notes
        for _ in range(repeat):
            http_export(server, small_export)

    verification["identical_to_python_encoder"] = sha_memory == verification["sha256"]
    if not verification["identical_to_python_encoder"]:
        log(f"{backend}: WARNING the HTTP export differs from the in-memory CSV encoder")
    return {
        "backend": backend,
        "users": users,
        "small_users": small,
        "repeat": repeat,
        "chunk_rows": int(os.environ.get("REVIEWPOINT_EXPORT_CHUNK_ROWS", DEFAULT_CHUNK_ROWS)),
        "connections": (
            int(os.environ.get("REVIEWPOINT_EXPORT_CONNECTIONS", DEFAULT_CONNECTIONS))
            if backend == "postgresql"
            else 1
        ),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed_s": {str(users): db.seed_s, str(small): small_db.seed_s},
        "ways": {
            "http_export": export.summary(),
            "db_dump": dump.summary(),
            "in_memory": memory.summary(),
            "http_export_small": small_export.summary(),
            "http_ndjson": ndjson.summary(),
            "db_json": json_dump.summary(),
            "http_xlsx": xlsx.summary(),
            "http_gzip": gzipped.summary(),
            "http_anonymized": anonymized.summary(),
        },
        "ratio_gzip_to_plain": gzipped.wall / export.wall,
        "ratio_anonymized_to_plain": anonymized.wall / export.wall,
        "ratio_export_to_dump": export.wall / dump.wall,
        "ratio_ndjson_to_db_json": ndjson.wall / json_dump.wall,
        "ratio_in_memory_to_dump": memory.wall / dump.wall,
        "filtered": filtered,
        "targets": {
            "ratio_export_to_dump_max": TARGET_RATIO[backend],
            "rss_growth_mb_max": TARGET_RSS_MB,
            "first_byte_s_max": TARGET_FIRST_BYTE_S,
            "health_s_max": TARGET_HEALTH_S,
            "ratio_ndjson_to_db_json_max": TARGET_NDJSON_RATIO,
            "xlsx_rows_per_s_min": TARGET_XLSX_ROWS_S,
            "ratio_gzip_to_plain_max": TARGET_GZIP_RATIO,
            "ratio_anonymized_to_plain_max": TARGET_ANONYMIZED_RATIO,
            "filtered_p50_s_max": TARGET_FILTERED_P50_S,
        },
        "verification": verification,
        "health_under_load": health,
    }


# --------------------------------------------------------------------------- report


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} MB"


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def render(result: dict[str, Any]) -> str:
    """The table for one backend, with each target and whether it was met."""
    backend: Backend = result["backend"]
    ways = result["ways"]
    seeds = ", ".join(
        f"{int(n):,}: {'cached' if s is None else f'seeded in {s:.1f} s'}"
        for n, s in result["seed_s"].items()
    )
    lines = [
        f"== {backend}: {result['users']:,} live users, median of {result['repeat']} runs, "
        f"chunk {result['chunk_rows']:,} rows, {result['connections']} connection(s) ({seeds})",
        f"{'way of exporting':<36} {'wall':>9} {'rows/s':>11} {'first byte':>11} "
        f"{'peak RSS growth':>16}",
    ]
    for way in ways.values():
        lines.append(
            f"{way['label']:<36} {_seconds(way['median_wall_s']):>9} "
            f"{way['rows_per_s']:>11,.0f} {_ms(way['median_first_byte_s']):>11} "
            f"{_mb(way['max_rss_growth_mb']):>16}"
        )
    export, small = ways["http_export"], ways["http_export_small"]
    ratio, target = result["ratio_export_to_dump"], TARGET_RATIO[backend]
    growth = max(export["max_rss_growth_mb"], small["max_rss_growth_mb"])
    first_byte = export["median_first_byte_s"]
    verification = result["verification"]
    health = result["health_under_load"]
    lines += [
        f"ratio export / dump     {ratio:5.2f}x   target <= {target}x   "
        f"{_verdict(ratio <= target)}",
        f"ratio in-memory / dump  {result['ratio_in_memory_to_dump']:5.2f}x   (for scale)",
        f"server RSS growth       {_mb(export['max_rss_growth_mb'])} at {result['users']:,}, "
        f"{_mb(small['max_rss_growth_mb'])} at {result['small_users']:,}   "
        f"target <= {TARGET_RSS_MB:.0f} MB   {_verdict(growth <= TARGET_RSS_MB)}",
        f"first byte              {_ms(first_byte)}   target <= "
        f"{TARGET_FIRST_BYTE_S * 1000:.0f} ms   {_verdict(first_byte <= TARGET_FIRST_BYTE_S)}",
        f"health under load       max {_ms(health['max_s'])}, p99 {_ms(health['p99_s'])} over "
        f"{health['samples']} requests during {health['exports']} exports   target <= "
        f"{TARGET_HEALTH_S * 1000:.0f} ms   {_verdict(health['max_s'] <= TARGET_HEALTH_S)}",
        f"download checked        {verification['records']:,} CSV records (header + "
        f"{result['users']:,}), {verification['bytes']:,} bytes, byte-identical to the "
        f"in-memory CSV: {'yes' if verification['identical_to_python_encoder'] else 'NO'}",
    ]
    ndjson, xlsx, filtered = ways["http_ndjson"], ways["http_xlsx"], result["filtered"]
    json_ratio = result["ratio_ndjson_to_db_json"]
    xlsx_rate = xlsx["rows_per_s"]
    identical = verification["ndjson_identical_to_database_json"]
    lines += [
        f"ratio NDJSON / same JSON {json_ratio:5.2f}x  target <= {TARGET_NDJSON_RATIO}x   "
        f"{_verdict(json_ratio <= TARGET_NDJSON_RATIO)}   (NDJSON byte-identical to the "
        f"database's: {'yes' if identical else 'NO'})",
        f"XLSX                    {xlsx_rate:,.0f} rows/s, peak RSS growth "
        f"{_mb(xlsx['max_rss_growth_mb'])}, {verification['xlsx_rows']:,} rows read back   "
        f"target >= {TARGET_XLSX_ROWS_S:,} rows/s   {_verdict(xlsx_rate >= TARGET_XLSX_ROWS_S)}",
        f"filtered export         {filtered['rows']} of {result['users']:,} rows "
        f"({filtered['query']}): p50 {_ms(filtered['p50_s'])}, p99 {_ms(filtered['p99_s'])}   "
        f"target p50 <= {TARGET_FILTERED_P50_S * 1000:.0f} ms   "
        f"{_verdict(filtered['p50_s'] <= TARGET_FILTERED_P50_S)}",
        f"NDJSON memory           peak RSS growth {_mb(ndjson['max_rss_growth_mb'])}",
    ]
    if "http_gzip" in ways:  # older saved results have no gzip row
        gzip_ratio = result["ratio_gzip_to_plain"]
        gzip_bytes = ways["http_gzip"]["bytes"]
        lines.append(
            f"ratio gzip / plain      {gzip_ratio:5.2f}x  target <= {TARGET_GZIP_RATIO}x   "
            f"{_verdict(gzip_ratio <= TARGET_GZIP_RATIO)}   ({gzip_bytes[-1]:,} bytes on the "
            f"wire; decompressed byte-identical to the plain download: "
            f"{'yes' if verification.get('gzip_identical') else 'NO'})"
        )
    if "http_anonymized" in ways:  # older saved results have no anonymized row
        anonymized_ratio = result["ratio_anonymized_to_plain"]
        unique = verification["anonymized_distinct_emails"] == verification["anonymized_records"]
        lines.append(
            f"ratio anonymized / plain {anonymized_ratio:5.2f}x target <= "
            f"{TARGET_ANONYMIZED_RATIO}x   {_verdict(anonymized_ratio <= TARGET_ANONYMIZED_RATIO)}"
            f"   ({verification['anonymized_distinct_emails']:,} distinct pseudonyms for "
            f"{verification['anonymized_records']:,} users: "
            f"{'no collision' if unique else 'COLLISION'}; all pseudonyms: "
            f"{'yes' if verification['anonymized_all_pseudonyms'] else 'NO'})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time GET /api/v1/users/export-full against the database's own CSV dump."
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--users", type=int, default=1_000_000, help="live users to export")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per way (median)")
    parser.add_argument(
        "--small-users", type=int, default=10_000, help="second, small export for RSS growth"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"),
        help="PostgreSQL server for the bench databases (env BENCH_PG_URL)",
    )
    args = parser.parse_args(argv)
    if args.users < 1 or args.small_users < 1 or not 1 <= args.repeat <= 100:
        parser.error("--users and --small-users must be >= 1, --repeat between 1 and 100")
    for tool in ("curl", "sqlite3", "psql"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH")

    backends: list[Backend] = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    pg = Postgres(args.pg_url)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failed = []
    for backend in backends:
        try:
            result = bench_backend(
                backend,
                pg if backend == "postgresql" else None,
                args.users,
                args.small_users,
                args.repeat,
            )
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            # One broken backend must not hide the other's numbers.
            log(f"{backend}: FAILED: {error}")
            failed.append(backend)
            continue
        path = RESULTS_DIR / f"latest-{backend}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        log(f"{backend}: results in {path.relative_to(ROOT)}")
        print(render(result) + "\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
