"""The naive export, for comparison: every ORM `User` in memory, then one CSV string.

This is how the seed project built its download (load all rows, `csv.writer` into a
`StringIO`), so the benchmark shows what streaming in SQL saves in time and memory.
It runs in its own process, started by `export_bench.py`, so its peak RSS
(`ru_maxrss`) is its own and not the harness's.

Prints one JSON object on stdout: wall time, rows, bytes, RSS before loading and
peak RSS, and the SHA-256 of the bytes (the harness compares it with the HTTP
download, since both must follow `formats.csv.CsvEncoder` to the byte).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import json
import resource
import time
from pathlib import Path

from sqlalchemy import false, select

from reviewpoint.db import standalone_session
from reviewpoint.exports.columns import FULL
from reviewpoint.exports.formats.csv import format_cell
from reviewpoint.users.models import User


def _rss_kib() -> int:
    """Current resident set size, to subtract the interpreter and imports from the peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _load(db_url: str) -> list[User]:
    async with standalone_session(db_url) as session:
        query = select(User).where(User.is_deleted == false()).order_by(User.id)
        return list((await session.scalars(query)).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    args = parser.parse_args()

    rss_before_kib = _rss_kib()
    started = time.perf_counter()
    users = asyncio.run(_load(args.db_url))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(FULL.header)
    writer.writerows(
        [format_cell(kind, getattr(user, name)) for name, kind in FULL.columns] for user in users
    )
    body = buffer.getvalue().encode("utf-8")
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    print(
        json.dumps(
            {
                "wall_s": wall,
                "rows": len(users),
                "bytes": len(body),
                "rss_before_kib": rss_before_kib,
                "peak_rss_kib": peak_kib,
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    main()
