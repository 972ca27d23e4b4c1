"""Running `reviewpoint` as an operator runs it: a subprocess with a clean environment.

Every command gets no `REVIEWPOINT_*` variable but the database URL (and what a test
adds) and runs in the test's temporary directory, so neither the developer's shell nor
a `.env` leaks in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from reviewpoint.db import create_engine

# No `__main__` module in the package: run the console script, as operators do.
REVIEWPOINT = str(Path(sys.executable).parent / "reviewpoint")
TIMEOUT = 60


def environment(db_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("REVIEWPOINT_") and name not in {"FORCE_COLOR", "COLUMNS"}
    }
    if db_url is not None:
        env["REVIEWPOINT_DB_URL"] = db_url
    return {**env, **extra}


def cli(
    cwd: Path,
    db_url: str | None,
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The command with `input` on stdin (none: stdin is closed, never the terminal)."""
    return subprocess.run(
        [REVIEWPOINT, *args],
        env=environment(db_url, **(env or {})),
        cwd=cwd,
        input=input or "",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (which printed nothing on stdout)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert result.stdout == ""
    return lines[0]


def sql_rows(db_url: str, sql: str, **params: object) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text(sql), params)
                return [tuple(row) for row in result]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def assert_fits(stdout: str, width: int = 80) -> None:
    """Every line of a table printed with COLUMNS=`width` fits in it."""
    too_long = [line for line in stdout.splitlines() if len(line) > width]
    assert not too_long, "\n".join(too_long)
