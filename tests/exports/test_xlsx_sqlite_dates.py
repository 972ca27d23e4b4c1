"""SQLite's XLSX dates equal the reference `excel_serial`, digit for digit, second by second.

The SQL computes each serial from SQLite's own date functions, which round to
the millisecond and work in doubles (`xlsx._sqlite_seconds`). The export tests
compare a few timestamps end to end; this one runs the same SQL over every
second of a day at the fractions nearest a rounding edge, and over four
centuries of days, in a real SQLite database of stored timestamps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy.dialects import sqlite

from reviewpoint.exports.columns import Column
from reviewpoint.exports.formats.base import Options
from reviewpoint.exports.formats.xlsx import XLSX, row_xml

COLUMNS: tuple[Column, ...] = (("created_at", "timestamp"), ("last_login_at", "optional_timestamp"))
# 0, and the microseconds on either side of SQLite's rounding to .999 and to the next second.
EDGES = (0, 499_999, 500_000, 999_499, 999_500, 999_999)
# How SQLAlchemy stores a UTC timestamp on SQLite, which is what the export reads.
_STORED = sqlite.DATETIME().bind_processor(sqlite.dialect())


def _every_second_of_a_leap_day() -> Iterator[datetime]:
    day = datetime(2024, 2, 29, tzinfo=UTC)
    for second in range(86_400):
        for microsecond in (0, 999_999):
            yield day + timedelta(seconds=second, microseconds=microsecond)


def _days_over_four_centuries() -> Iterator[datetime]:
    # A prime step walks through all times of day and days of the year.
    moment = datetime(1900, 3, 1, tzinfo=UTC)
    while moment.year < 2300:
        for microsecond in EDGES:
            yield moment.replace(microsecond=microsecond)
        moment += timedelta(days=97, seconds=7_919)


def _sqlite_rows(moments: list[datetime]) -> bytes:
    rows = XLSX.sqlite_rows(COLUMNS, Options())
    assert rows.finish is not None
    with sqlite3.connect(":memory:") as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, created_at, last_login_at)")
        stored = [_STORED(moment.replace(tzinfo=None)) for moment in moments]
        connection.executemany(
            "INSERT INTO users (created_at, last_login_at) VALUES (?, ?)",
            [(value, value if n % 3 else None) for n, value in enumerate(stored)],
        )
        (records,) = connection.execute(
            f"SELECT CAST(group_concat(line, '') AS BLOB) FROM "
            f"(SELECT {rows.line} AS line FROM users ORDER BY id)"
        ).fetchone()
    return rows.finish(bytes(records))


def _reference_rows(moments: list[datetime]) -> bytes:
    return b"".join(
        row_xml(COLUMNS, {"created_at": moment, "last_login_at": moment if n % 3 else None})
        for n, moment in enumerate(moments)
    )


def test_every_second_of_a_day_is_the_reference_serial() -> None:
    moments = list(_every_second_of_a_leap_day())
    assert _sqlite_rows(moments) == _reference_rows(moments)


def test_four_centuries_of_days_are_the_reference_serial() -> None:
    moments = list(_days_over_four_centuries())
    assert len(moments) > 8_000
    assert _sqlite_rows(moments) == _reference_rows(moments)
