"""What an export's records hold: its columns, in order, and what each one is.

Every format writes the same columns with the same meaning; a column's kind
decides how each format spells its values (`formats/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from reviewpoint.errors import BadRequest

# `optional_timestamp` may be NULL; `timestamp` never is, which lets the SQL of
# the hot columns skip a NULL test. `pseudonym` is text no format needs to quote,
# escape or guard (anonymized emails and names, `anonymize.pseudonym_kinds`); it
# may be NULL or empty.
ColumnKind = Literal["id", "text", "timestamp", "optional_timestamp", "boolean", "pseudonym"]
Column = tuple[str, ColumnKind]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class ExportSpec:
    """One export's columns and the name its file downloads as (without extension)."""

    stem: str
    columns: tuple[Column, ...]

    @property
    def header(self) -> list[str]:
        return [name for name, _ in self.columns]


MINIMAL = ExportSpec(
    stem="users_export",
    columns=(("id", "id"), ("email", "text"), ("name", "text")),
)
FULL = ExportSpec(
    stem="users_full_export",
    columns=(
        ("id", "id"),
        ("email", "text"),
        ("name", "text"),
        ("created_at", "timestamp"),
        ("updated_at", "timestamp"),
        ("is_active", "boolean"),
        ("is_admin", "boolean"),
    ),
)
# What `fields=` on the full export may pick from: the full set and two more.
# `is_deleted` is false in every export of live users.
CHOOSABLE: dict[str, ColumnKind] = {
    **dict(FULL.columns),
    "last_login_at": "optional_timestamp",
    "is_deleted": "boolean",
}


def choose_fields(spec: ExportSpec, fields: str) -> ExportSpec:
    """`spec` with the columns `fields` names (comma-separated), in that order.

    Unknown and repeated names are a 400 naming the field and listing the allowed ones.
    """
    names = [name.strip() for name in fields.split(",")]
    allowed = ", ".join(CHOOSABLE)
    chosen: list[Column] = []
    for name in names:
        if name not in CHOOSABLE:
            raise BadRequest(f"Unknown field {name!r} in 'fields'. Allowed: {allowed}.")
        if any(name == taken for taken, _ in chosen):
            raise BadRequest(f"Field '{name}' appears twice in 'fields'. Allowed: {allowed}.")
        chosen.append((name, CHOOSABLE[name]))
    return ExportSpec(stem=spec.stem, columns=tuple(chosen))


def utc_second(value: datetime) -> datetime:
    """A timestamp as every format shows it: UTC, to the whole second (truncated)."""
    moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.replace(microsecond=0)


def format_timestamp(value: datetime) -> str:
    return utc_second(value).strftime(TIMESTAMP_FORMAT)
