"""The reference CSV encoder: the format every export path must reproduce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from reviewpoint.exports.columns import FULL, MINIMAL
from reviewpoint.exports.formats.csv import CsvEncoder, guard_formula


def test_header_ends_with_crlf() -> None:
    assert CsvEncoder(MINIMAL).header() == b"id,email,name\r\n"


def test_quotes_only_fields_that_need_it() -> None:
    rows = [
        {"id": 1, "email": "a@example.com", "name": 'Say "hi", then\nleave'},
        {"id": 2, "email": "b@example.com", "name": "plain"},
    ]
    assert CsvEncoder(MINIMAL).rows(rows) == (
        b'1,a@example.com,"Say ""hi"", then\nleave"\r\n2,b@example.com,plain\r\n'
    )


def test_missing_name_is_an_empty_field() -> None:
    assert (
        CsvEncoder(MINIMAL).rows([{"id": 3, "email": "c@x.io", "name": None}]) == b"3,c@x.io,\r\n"
    )


@pytest.mark.parametrize("trigger", ["=", "+", "-", "@", "\t", "\r", "\x00"])
def test_formula_triggers_get_a_leading_quote(trigger: str) -> None:
    assert guard_formula(f"{trigger}cmd") == f"'{trigger}cmd"


@pytest.mark.parametrize("text", ["plain", " =not first", "a=b", "'quoted", ""])
def test_other_text_is_unchanged(text: str) -> None:
    assert guard_formula(text) == text


def test_full_row_uses_z_timestamps_and_lowercase_booleans() -> None:
    moment = datetime(2025, 1, 8, 12, 30, 5, 999999, tzinfo=timezone(timedelta(hours=2)))
    row = {
        "id": 7,
        "email": "d@example.com",
        "name": "D",
        "created_at": moment,
        "updated_at": datetime(2025, 1, 8, 15, 45, tzinfo=UTC),
        "is_active": True,
        "is_admin": False,
    }
    assert CsvEncoder(FULL).rows([row]) == (
        b"7,d@example.com,D,2025-01-08T10:30:05Z,2025-01-08T15:45:00Z,true,false\r\n"
    )


def test_ids_and_booleans_are_never_guarded() -> None:
    row = {"id": -1, "email": "e@example.com", "name": "E"}
    assert CsvEncoder(MINIMAL).rows([row]).startswith(b"-1,")
