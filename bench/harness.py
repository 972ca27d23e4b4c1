"""What the benchmarks share: the `reviewpoint` CLI, seeded databases, a served process.

`export_bench.py` (speed and memory of one export) and `loadtest.py` (the service
under a storm of requests) both drive the project through the entry points an
operator uses, so they create databases, seed and serve the same way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import make_url

Backend = Literal["sqlite", "postgresql"]

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BIN = Path(sys.executable).parent
CLI = str(BIN / "reviewpoint")

# Upper bounds for every wait, so a hung step fails the run instead of hanging it.
SEED_TIMEOUT_S = 1800
STEP_TIMEOUT_S = 900
SERVER_START_S = 60


def logger(tag: str) -> Callable[[str], None]:
    """Progress goes to stderr, tagged and timed, so stdout holds only the report."""

    def log(message: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


def run(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = STEP_TIMEOUT_S,
    stdout: Any = subprocess.PIPE,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, failing loudly with its stderr."""
    result = subprocess.run(
        list(args),
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:3])} ... exited {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return result


@dataclass
class Database:
    """One seeded database: how the service, the dump tool and the cache name it."""

    backend: Backend
    users: int
    url: str  # REVIEWPOINT_DB_URL
    name: str  # file path (SQLite) or database name (PostgreSQL)
    seed_s: float | None = None  # None: reused from the cache
    # What the CLI and server inherit; None: this process's environment.
    base_env: dict[str, str] | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ if self.base_env is None else self.base_env)
        env.update(REVIEWPOINT_DB_URL=self.url, REVIEWPOINT_LOG_LEVEL="warning", **extra)
        return env


class Postgres:
    """psql against the server named by --pg-url (the bench creates its own databases)."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.base = parsed
        self.args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        self.args += ["-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432)]
        self.args += ["-U", parsed.username or "postgres"]
        self.env = dict(os.environ)
        if parsed.password:
            self.env["PGPASSWORD"] = parsed.password

    def url(self, database: str) -> str:
        return self.base.set(database=database).render_as_string(hide_password=False)

    def scalar(self, sql: str, database: str = "postgres") -> str:
        return run([*self.args, "-d", database, "-tAc", sql], env=self.env).stdout.strip()

    def execute(self, sql: str, database: str = "postgres") -> None:
        run([*self.args, "-d", database, "-c", sql], env=self.env)


def seed(db: Database, *, cwd: Path = ROOT) -> float:
    """Migrate and seed with the CLI, timing the seed alone (the issue's < 2 min budget)."""
    run([CLI, "db", "upgrade"], env=db.env(), cwd=cwd)
    started = time.perf_counter()
    run([CLI, "seed", "--users", str(db.users)], env=db.env(), timeout=SEED_TIMEOUT_S, cwd=cwd)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def status_kib(pid: int, field_name: str) -> int:
    """A `Vm*` line of /proc/<pid>/status in KiB (0 once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def wait_healthy(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{base_url}/api/v1/health", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy after {SERVER_START_S} s; see {log_path}")
