"""Text that spells an Excel escape opens as stored (found by tests/contract).

Excel and LibreOffice read `_xHHHH_` in cell text as U+HHHH (ECMA-376
ST_Xstring): a user named `_x000D_` opened as a line break. openpyxl does not
decode it, so the openpyxl round trips never saw it; LibreOffice does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openpyxl.utils.escape import unescape

from reviewpoint.exports.columns import MINIMAL
from reviewpoint.exports.formats import FORMATS
from reviewpoint.exports.formats.base import Options
from reviewpoint.exports.formats.xlsx import xml_text
from tests.data import create_api_key, insert_users, live_users
from tests.exports.test_formats import _parts, _workbook_rows
from tests.exports.test_xlsx_libreoffice import _libreoffice_sheets

NAMES = [
    "_x000D_",
    "a_x0041_b",
    "_x0041_x0042_",  # two escapes sharing an underscore
    "_x005F_",  # an escaped underscore, literally
    "_X0041_ _x00zz_ _x041_",  # not escapes: left alone
    "_\x01x0041_",  # an escape once XML's forbidden character is removed
    "__x0041__",
]
STORED_IN_XLSX = [name.replace("\x01", "") for name in NAMES]


@pytest.mark.parametrize(
    ("text", "xml"),
    [
        ("_x000D_", "_x005F_x000D_"),
        ("_x0041_x0042_", "_x005F_x0041_x005F_x0042_"),
        ("_X0041_ _x00zz_ _x041_", "_X0041_ _x00zz_ _x041_"),
        ("_\x01x0041_", "_x005F_x0041_"),
    ],
)
def test_xml_text_escapes_the_underscore_of_an_excel_escape(text: str, xml: str) -> None:
    assert xml_text(text) == xml


def test_excel_escapes_in_names_open_as_stored(
    client: TestClient, db_url: str, tmp_path: Path
) -> None:
    insert_users(db_url, [(f"u{n}@example.com", name) for n, name in enumerate(NAMES)])
    key = {"X-API-Key": create_api_key(db_url, ["users:export"])[1]}
    body = client.get("/api/v1/users/export", params={"format": "xlsx"}, headers=key).content
    rows = [{"id": u.id, "email": u.email, "name": u.name} for u in live_users(db_url)]
    assert _parts(body) == _parts(FORMATS["xlsx"].encode(MINIMAL.columns, rows, Options()))
    # Read as Excel reads it: openpyxl's text with the escapes decoded.
    (sheet,) = _workbook_rows(body)
    assert [unescape(row[2]) for row in sheet[1:]] == STORED_IN_XLSX
    (calc,) = _libreoffice_sheets(body, tmp_path).values()
    assert [row[2] for row in calc[1:]] == STORED_IN_XLSX
