"""XLSX downloads open in LibreOffice Calc with their types and text intact.

openpyxl (test_formats.py) reads back what the writer meant; LibreOffice is a
second, independent reader, and the one the issue names. Its own converter,
`soffice --headless --convert-to csv`, turns each sheet into CSV; with every
text cell quoted and numbers not, the CSV keeps each cell's type: a quoted
field is text, an unquoted one a number, date or boolean as Calc shows it.

The test fails, never skips, when `soffice` is missing: CI installs it
(`.ci/run`, Debian's `libreoffice-calc-nogui`), so a skip would only hide a
machine that no longer checks the format.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from reviewpoint.exports.columns import CHOOSABLE, utc_second
from reviewpoint.exports.formats import FORMATS
from reviewpoint.exports.formats.xlsx import FORBIDDEN, XlsxFormat
from reviewpoint.main import create_app
from tests.data import create_api_key, insert_user, insert_users, live_users
from tests.exports.hostile import HOSTILE_NAMES, MARKUP_NAMES

EXPORT_FULL = "/api/v1/users/export-full"
# Every kind of column: the optional timestamp (never set here) is an empty cell.
FIELDS = [
    "id",
    "email",
    "name",
    "created_at",
    "updated_at",
    "last_login_at",
    "is_active",
    "is_admin",
    "is_deleted",
]
# The CSV filter's tokens: comma, double quote, UTF-8, from line 1, no column
# formats, default language; then quote every text cell, write numbers as
# numbers (false would quote them too), cells as shown (dates in their number
# format); no formulas, no space trimming; -1: every sheet, each to its own
# `<file>-<sheet>.csv` (LibreOffice 7.2 and later; Debian 12 has 7.4).
CSV_FILTER = "Text - txt - csv (StarCalc):44,34,76,1,,0,true,true,true,false,false,-1"
CONVERT_SECONDS = 180  # a cold start on a busy 2-core machine takes a few seconds
# Timestamps that stress the serial-number arithmetic: truncated microseconds,
# the Unix epoch, a leap day's last second, another zone, a late year.
MOMENTS = [
    datetime(2025, 1, 8, 10, 30, 0, 987654, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC),
    datetime(2099, 12, 31, 23, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
]
_DELETE_FORBIDDEN = str.maketrans("", "", FORBIDDEN)


@dataclass(frozen=True)
class Shown:
    """A cell LibreOffice wrote unquoted: a number, date or boolean as Calc displays it."""

    text: str


Cell = str | Shown | None  # text, a typed value, or an empty cell


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


def _insert_hostile_users(db_url: str) -> None:
    """Every hostile name, the awkward timestamps, and both values of each boolean."""
    names = HOSTILE_NAMES + MARKUP_NAMES
    insert_users(db_url, [(f"h{n}@example.com", name) for n, name in enumerate(names)])
    for n, moment in enumerate(MOMENTS):
        insert_users(db_url, [(f"t{n}@example.com", f"at {moment.isoformat()}")], created_at=moment)
    insert_user(db_url, "=admin@example.com", name="1e5", is_admin=True, is_active=False)


def _as_calc_shows(name: str, value: object) -> Cell:
    """What LibreOffice should show for a stored value in the column `name`."""
    kind = CHOOSABLE[name]
    if value is None:
        return None
    if kind == "text":
        assert isinstance(value, str)
        text = value.translate(_DELETE_FORBIDDEN)  # XML 1.0 cannot hold them
        if "\n" in text:
            # Calc keeps a cell with line feeds as paragraphs, and CR LF or a
            # lone CR there ends one too; a CR in a one-line cell stays.
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text or None  # empty text is an empty cell
    if kind in ("timestamp", "optional_timestamp"):
        assert isinstance(value, datetime)
        return Shown(utc_second(value).strftime("%Y-%m-%d %H:%M:%S"))
    if kind == "boolean":
        return Shown("TRUE" if value else "FALSE")
    return Shown(str(value))


def _expected_rows(db_url: str) -> list[list[Cell]]:
    return [
        [_as_calc_shows(name, getattr(user, name)) for name in FIELDS]
        for user in live_users(db_url)
    ]


# A quoted field (quotes inside doubled) or an unquoted one, then `,`, LF or the end.
_FIELD = re.compile(r'"((?:[^"]|"")*)"|([^,"\n]*)')


def _csv_cells(text: str) -> Iterator[list[Cell]]:
    """LibreOffice's CSV as cells, keeping what Python's csv module drops: the quoting."""
    position, row = 0, list[Cell]()
    while position < len(text):
        field = _FIELD.match(text, position)
        assert field is not None
        quoted, bare = field.groups()
        row.append(
            quoted.replace('""', '"') if quoted is not None else Shown(bare) if bare else None
        )
        position = field.end()
        separator = text[position : position + 1]
        assert separator in (",", "\n", ""), f"unexpected {separator!r} at {position}"
        position += 1
        if separator != ",":
            yield row
            row = []


def _libreoffice_sheets(workbook: bytes, tmp_path: Path) -> dict[str, list[list[Cell]]]:
    """Each sheet of `workbook` as LibreOffice converts it to CSV, by sheet name."""
    soffice = shutil.which("soffice")
    if soffice is None:
        pytest.fail(
            "soffice not found: the XLSX check needs LibreOffice Calc "
            "(Debian: apt-get install -y --no-install-recommends libreoffice-calc-nogui; "
            ".ci/run installs it)"
        )
    source = tmp_path / "users.xlsx"
    source.write_bytes(workbook)
    out = tmp_path / "csv"
    command = [
        soffice,
        # A profile of its own: runs in parallel never share (or wait on) one.
        f"-env:UserInstallation={(tmp_path / 'libreoffice-profile').as_uri()}",
        "--headless",
        "--norestore",
        "--convert-to",
        f"csv:{CSV_FILTER}",
        "--outdir",
        str(out),
        str(source),
    ]
    # `soffice` starts soffice.bin as its child: a session of its own lets a
    # timeout end both.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=CONVERT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"soffice did not convert the workbook within {CONVERT_SECONDS} s")
    assert process.returncode == 0, stderr.decode(errors="replace")
    sheets = {
        path.stem.removeprefix("users-"): list(_csv_cells(path.read_bytes().decode()))
        for path in out.glob("users-*.csv")
    }
    assert sheets, f"LibreOffice wrote no CSV: {stdout!r} {stderr!r}"
    return sheets


def test_libreoffice_reads_hostile_text_and_typed_cells(
    client: TestClient, db_url: str, full_key: dict[str, str], tmp_path: Path
) -> None:
    _insert_hostile_users(db_url)
    params = {"format": "xlsx", "fields": ",".join(FIELDS)}
    response = client.get(EXPORT_FULL, params=params, headers=full_key)
    assert response.status_code == 200
    sheets = _libreoffice_sheets(response.content, tmp_path)
    assert list(sheets) == ["Users"]
    header, *rows = sheets["Users"]
    assert header == FIELDS
    assert rows == _expected_rows(db_url)
    # What the comparison means, spelled out on rows everyone can read:
    admin = rows[-1]
    assert admin[FIELDS.index("email")] == "=admin@example.com"  # text, not a formula
    assert admin[FIELDS.index("name")] == "1e5"  # text, not the number 100000
    assert admin[FIELDS.index("is_active") :] == [Shown("FALSE"), Shown("TRUE"), Shown("FALSE")]
    first_moment = rows[len(HOSTILE_NAMES) + len(MARKUP_NAMES)]
    assert first_moment[FIELDS.index("created_at")] == Shown("2025-01-08 10:30:00")
    assert first_moment[FIELDS.index("last_login_at")] is None


def test_libreoffice_reads_every_sheet_of_a_long_export(
    settings: Settings,
    db_url: str,
    full_key: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _insert_hostile_users(db_url)
    expected = _expected_rows(db_url)
    # Sheets of just over half the rows (with their header) stand for Excel's
    # 1,048,576, so the export continues on a second sheet mid-chunk.
    per_sheet = len(expected) // 2 + 1
    monkeypatch.setitem(FORMATS, "xlsx", XlsxFormat(sheet_rows=per_sheet + 1))
    app = create_app(settings.model_copy(update={"export_chunk_rows": 7}))
    with TestClient(app) as client:
        params = {"format": "xlsx", "fields": ",".join(FIELDS)}
        response = client.get(EXPORT_FULL, params=params, headers=full_key)
    assert response.status_code == 200
    sheets = _libreoffice_sheets(response.content, tmp_path)
    assert sorted(sheets) == ["Users", "Users 2"]
    assert [sheet[0] for sheet in sheets.values()] == [FIELDS, FIELDS]
    assert len(sheets["Users"]) - 1 == per_sheet
    assert sheets["Users"][1:] + sheets["Users 2"][1:] == expected
