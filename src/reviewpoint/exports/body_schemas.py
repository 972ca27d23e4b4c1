"""What an export's body holds, as JSON Schema for the OpenAPI document.

Each format's 200 documents its records: a list of objects keyed by column
name. NDJSON (one object a line), JSON (one array) and XLSX (a header row, then
one row a record) carry typed values; CSV carries every cell as text, so its
schema says how each kind is spelled. Clients and the contract tests
(tests/contract/) read a body into that list and check it against the schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reviewpoint.exports.columns import ColumnKind

TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
_TIMESTAMP = {"type": "string", "pattern": TIMESTAMP_PATTERN}

_TYPED: dict[ColumnKind, dict[str, Any]] = {
    "id": {"type": "integer", "minimum": 1},
    "text": {"type": ["string", "null"]},
    "timestamp": _TIMESTAMP,
    "optional_timestamp": {"anyOf": [_TIMESTAMP, {"type": "null"}]},
    "boolean": {"type": "boolean"},
}
_CSV: dict[ColumnKind, dict[str, Any]] = {
    "id": {"type": "string", "pattern": "^[0-9]+$"},
    # A missing name is an empty cell; with `excel_safe` a leading `=+-@` gets a `'`.
    "text": {"type": "string"},
    "timestamp": _TIMESTAMP,
    "optional_timestamp": {"type": "string", "pattern": f"^$|{TIMESTAMP_PATTERN}"},
    "boolean": {"enum": ["true", "false"]},
}


def typed_records(columns: Mapping[str, ColumnKind], required: Sequence[str]) -> dict[str, Any]:
    """The records of an NDJSON, JSON or XLSX export (XLSX dates read back as these strings)."""
    return _records(columns, required, _TYPED)


def csv_records(columns: Mapping[str, ColumnKind], required: Sequence[str]) -> dict[str, Any]:
    """The records of a CSV export: each row after the header, keyed by the header's names."""
    return _records(columns, required, _CSV)


def _records(
    columns: Mapping[str, ColumnKind],
    required: Sequence[str],
    values: Mapping[ColumnKind, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {name: values[kind] for name, kind in columns.items()},
            "required": list(required),
            "additionalProperties": False,
        },
    }
