"""A/B timing of full exports: two source trees (or formats, or chunk sizes), runs alternated.

    python bench/compare.py [--db sqlite|postgresql] [--users N] [--repeat R] WAY [WAY ...]

    WAY = name=SRC[:format][@chunk_rows]

SRC is a `src` directory (the server imports `reviewpoint` from it through
PYTHONPATH) or `.` for this checkout's. Each distinct SRC and chunk size gets
its own `reviewpoint serve` on the same seeded database (`export_bench.py`
prepares and caches it); every way is downloaded once untimed, then R times
with the order reversed on every other round, so load from other jobs on a
shared machine falls on all ways alike. Prints each round and the medians.
Timing, curl and RSS sampling are `export_bench.py`'s.

    git archive <rev> src | tar -x -C /tmp/before
    python bench/compare.py --repeat 7 before=/tmp/before/src after=. csv=.:csv
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace

import export_bench as bench
from harness import Postgres


@dataclass(frozen=True)
class Way:
    name: str
    src: str
    format: str
    chunk_rows: str | None

    @classmethod
    def parse(cls, text: str) -> Way:
        name, _, rest = text.partition("=")
        rest, _, chunk_rows = rest.partition("@")
        src, _, export_format = rest.partition(":")
        if not name or not src:
            raise argparse.ArgumentTypeError(f"{text!r} is not name=SRC[:format][@chunk_rows]")
        return cls(name, src, export_format or "xlsx", chunk_rows or None)

    def server_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.src != ".":
            env["PYTHONPATH"] = os.path.abspath(self.src)
        if self.chunk_rows:
            env["REVIEWPOINT_EXPORT_CHUNK_ROWS"] = self.chunk_rows
        return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"),
    )
    parser.add_argument("ways", nargs="+", type=Way.parse)
    args = parser.parse_args(argv)
    ways: list[Way] = args.ways
    if args.db == "sqlite":
        db = bench.prepare_sqlite(args.users)
    else:
        db = bench.prepare_postgres(Postgres(args.pg_url), args.users)
    runs = {way.name: bench.Way(way.name, db.users) for way in ways}
    with ExitStack() as stack:
        servers: dict[tuple[str, str | None], bench.Server] = {}
        for way in ways:
            key = (way.src, way.chunk_rows)
            if key not in servers:
                served = replace(db, base_env=way.server_env())
                servers[key] = stack.enter_context(bench.serve(served))
        for way in ways:  # warm-up: caches, and each server's first export
            server = servers[way.src, way.chunk_rows]
            bench.http_export(server, runs[way.name], query=f"format={way.format}", record=False)
        for round_number in range(args.repeat):
            for way in ways if round_number % 2 == 0 else ways[::-1]:
                server = servers[way.src, way.chunk_rows]
                bench.http_export(server, runs[way.name], query=f"format={way.format}")
            times = "  ".join(f"{way.name} {runs[way.name].wall_s[-1]:.2f} s" for way in ways)
            print(f"round {round_number + 1}: {times}  load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{db.backend}, {db.users:,} users, median of {args.repeat} alternated runs:")
    for way in ways:
        run = runs[way.name]
        print(
            f"  {way.name:12} {run.wall:6.2f} s  {run.rows / run.wall:>9,.0f} rows/s  "
            f"(min {min(run.wall_s):.2f}, max {max(run.wall_s):.2f})  "
            f"peak RSS growth {run.rss_growth or 0:.1f} MB  {run.bytes[-1]:,} bytes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
