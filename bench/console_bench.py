"""Console bench: the server time of every console page on the seeded databases.

    python bench/console_bench.py [--db sqlite|postgresql|both] [--users N] [--repeat R]

Serves the app with the CLI on a cached, seeded database (the export bench's own:
bench/.cache/sqlite-<N>.db, PostgreSQL `rvp_bench_<N>`), signs in to the console
as a fresh admin, finds the pages from the app's routes (reviewpoint.console.pages,
as the browser's quality checks do) and times each, with the query strings a page
typically gets, R times on one keep-alive connection. The issue's target: every
page under 200 ms on 1,000,000 users; a median over it exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

from export_bench import prepare_postgres, prepare_sqlite, serve
from harness import CLI, Backend, Database, Postgres, logger, run
from reviewpoint.config import load_settings
from reviewpoint.console.deps import SIGN_IN_PATH
from reviewpoint.console.pages import Fetched, discover, page_routes
from reviewpoint.main import create_app

TARGET_MS = 200.0
# What a page is typically asked besides its first view: a search, a later page, a
# filter. Pages that take none of these render their default view for them.
TYPICAL_QUERIES: dict[str, tuple[str, ...]] = {
    "/console/export": (
        "kind=full&is_active=true&created_after=2025-01-01T00:00:00Z",
        "kind=minimal&email=seed500000@seed.example",
    ),
    "/console/users": ("email=seed4242", "after=500000"),
    "/console/audit": ("outcome=completed", "from=2025-01-01"),
}
# Fragments a page loads once shown, timed for the record but not held to the
# page target: the export page's count reads every matching row.
FRAGMENTS: dict[str, tuple[str, ...]] = {
    "/console/export/count": (
        "kind=full",
        *TYPICAL_QUERIES["/console/export"],
    ),
}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_SERVER_TIMING = re.compile(r"dur=([0-9.]+)")

log = logger("console")


def sign_in(client: httpx.Client, email: str, password: str) -> None:
    form = client.get(SIGN_IN_PATH)
    token = _CSRF.search(form.text)
    if token is None:
        raise RuntimeError(f"no CSRF token on the sign-in page ({form.status_code})")
    answer = client.post(
        SIGN_IN_PATH, data={"email": email, "password": password, "csrf_token": token[1]}
    )
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in answered {answer.status_code}: {answer.text[:300]}")


def time_page(client: httpx.Client, url: str, repeat: int) -> dict[str, Any]:
    """Server time of `repeat` GETs: its Server-Timing if it sends one, else the
    client's time to the last byte (loopback, keep-alive: little beyond the server)."""
    seconds: list[float] = []
    source = "client"
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        timing = _SERVER_TIMING.search(response.headers.get("server-timing", ""))
        if timing:
            source = "Server-Timing"
            seconds.append(float(timing[1]) / 1000)
        else:
            seconds.append(elapsed)
    ordered = sorted(seconds)
    return {
        "url": url,
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000,
        "source": source,
    }


def bench_backend(db: Database, repeat: int) -> list[dict[str, Any]]:
    # A fresh admin, deleted afterwards: the cache keeps exactly N live users.
    email = f"console-bench-{os.getpid()}-{int(time.time())}@bench.example"
    password = secrets.token_urlsafe(16)
    created = run(
        [CLI, "users", "create", "--email", email, "--password", password, "--admin"],
        env=db.env(),
    )
    user_id = re.search(r"created user (\d+)", created.stderr)
    if user_id is None:
        raise RuntimeError(f"no user id in: {created.stderr}")
    try:
        app = create_app(load_settings(_env_file=None, env="test", db_url=db.url))
        with serve(db) as server, httpx.Client(base_url=server.base_url, timeout=30) as client:
            sign_in(client, email, password)

            def fetch(path: str) -> Fetched:
                answer = client.get(path)
                kind = answer.headers.get("content-type", "")
                return Fetched(answer.status_code, kind, answer.text)

            found = discover(page_routes(app), fetch)  # also warms every page once
            for path, answer in found.skipped.items():
                log(f"{db.backend}: not a page: {path} ({answer})")
            if found.unreached:
                log(f"{db.backend}: no page links to {found.unreached}: not timed")
            urls = [
                f"{path}?{query}" if query else path
                for path in found.pages
                for query in ("", *TYPICAL_QUERIES.get(path, ()))
            ]
            fragments = [
                f"{path}?{query}" for path, queries in FRAGMENTS.items() for query in queries
            ]
            timings = []
            for url in [*urls, *fragments]:
                timings.append({**time_page(client, url, repeat), "fragment": url in fragments})
                log(f"{db.backend}: {url}: median {timings[-1]['median_ms']:.1f} ms")
            return timings
    finally:
        run([CLI, "users", "delete", user_id[1]], env=db.env())


def render(backend: Backend, users: int, repeat: int, timings: list[dict[str, Any]]) -> str:
    width = max(len(t["url"]) for t in timings)
    lines = [
        f"== {backend}: {users:,} live users, {repeat} GETs per page, server time",
        f"{'page':<{width}}  {'median':>9}  {'p95':>9}  source         target {TARGET_MS:.0f} ms",
    ]
    for t in timings:
        verdict = "ok" if t["median_ms"] <= TARGET_MS else "MISSED"
        if t["fragment"]:
            verdict = "(after the page)"
        lines.append(
            f"{t['url']:<{width}}  {t['median_ms']:>6.1f} ms  {t['p95_ms']:>6.1f} ms  "
            f"{t['source']:<13}  {verdict}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time every console page's GET.")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--users", type=int, default=1_000_000, help="live users seeded")
    parser.add_argument("--repeat", type=int, default=20, help="timed GETs per page")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"),
        help="PostgreSQL server for the bench databases (env BENCH_PG_URL)",
    )
    args = parser.parse_args(argv)
    if args.users < 1 or not 1 <= args.repeat <= 1000:
        parser.error("--users must be >= 1, --repeat between 1 and 1000")

    backends: list[Backend] = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    failed = False
    for backend in backends:
        try:
            if backend == "sqlite":
                db = prepare_sqlite(args.users)
            else:
                db = prepare_postgres(Postgres(args.pg_url), args.users)
            timings = bench_backend(db, args.repeat)
        except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as error:
            log(f"{backend}: FAILED: {error}")
            failed = True
            continue
        print(render(backend, args.users, args.repeat, timings) + "\n", flush=True)
        failed |= any(t["median_ms"] > TARGET_MS and not t["fragment"] for t in timings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
