"""The strict CSV reader the properties rely on refuses what RFC 4180 does not allow."""

from __future__ import annotations

import pytest

from tests.contract.rfc4180 import NotRfc4180, read_strict


def test_reads_quoted_fields_with_separators_quotes_and_line_breaks() -> None:
    document = b'id,name\r\n1,"a,""b""\r\nc"\r\n2,\r\n'
    assert read_strict(document) == [["id", "name"], ["1", 'a,"b"\r\nc'], ["2", ""]]


def test_reads_a_lone_empty_field_written_as_two_quotes() -> None:
    assert read_strict(b'name\r\n""\r\nx\r\n') == [["name"], [""], ["x"]]


@pytest.mark.parametrize(
    "document",
    [
        b"id,name\n1,a\n",  # LF alone ends no record
        b"id,name\r\n1,a",  # the last record's CRLF is missing
        b'id,name\r\n1,"a"\r\n',  # quoted without need
        b'id,name\r\n1,a"b\r\n',  # a bare quote in an unquoted field
        b'id,name\r\n1,"a"b\r\n',  # text after the closing quote
        b'id,name\r\n1,"a\r\n',  # never closed
        b"id,name\r\n1\r\n",  # a field short
        b"id,name\r\n1,a\rb\r\n",  # a bare CR in an unquoted field
        b"name\r\n\r\n",  # a lone empty field as a blank line
        b'name,id\r\n"",1\r\n',  # an empty field quoted though not alone
    ],
)
def test_refuses_what_rfc_4180_does_not_allow(document: bytes) -> None:
    with pytest.raises(NotRfc4180):
        read_strict(document)
