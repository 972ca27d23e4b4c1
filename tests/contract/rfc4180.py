"""A strict reader of the CSV the exports document: RFC 4180 and nothing looser.

Python's `csv` module (even with `strict=True`) reads more than the RFC allows:
bare LF or CR as record ends, a missing final line end, quotes that were not
needed. This reader fails on any of them, and on what the README adds: a
field is quoted only when it holds a comma, a double quote, CR or LF, and
every record (the header too) ends in CRLF, and a record whose only field is
empty is `""`, never a blank line (Python's `csv` writes it so, and readers
skip blank lines). Text is UTF-8; the RFC's ASCII
TEXTDATA is widened to every other character, as `text/csv; charset=utf-8`
and RFC 7111 allow.
"""

from __future__ import annotations

import re

_QUOTED = re.compile(r'"((?:[^"]|"")*)"', re.DOTALL)
_PLAIN = re.compile(r'[^",\r\n]*')
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


class NotRfc4180(AssertionError):
    pass


def read_strict(document: bytes) -> list[list[str]]:
    """The records of `document`, or `NotRfc4180` saying where it breaks the rules."""
    text = document.decode("utf-8")  # UnicodeDecodeError: not UTF-8 at all
    records: list[list[str]] = []
    position = 0
    while position < len(text):
        record: list[str] = []
        while True:
            quoted = _QUOTED.match(text, position)
            field = quoted or _PLAIN.match(text, position)
            assert field is not None  # the plain pattern matches the empty string
            alone = not record and text.startswith("\r\n", field.end())
            if quoted is not None:
                value = quoted.group(1).replace('""', '"')
                if not _NEEDS_QUOTES.search(value) and not (alone and value == ""):
                    raise NotRfc4180(f"field quoted without need at {position}: {value!r}")
            else:
                value = field.group()
                if alone and value == "":
                    raise NotRfc4180(f'a blank line at {position}: a lone empty field is ""')
            position = field.end()
            record.append(value)
            if text.startswith(",", position):
                position += 1
                continue
            if text.startswith("\r\n", position):
                position += 2
                break
            raise NotRfc4180(f"expected a comma or CRLF at {position}: {text[position:][:20]!r}")
        if records and len(record) != len(records[0]):
            raise NotRfc4180(
                f"record {len(records)} has {len(record)} fields, not {len(records[0])}"
            )
        records.append(record)
    return records
