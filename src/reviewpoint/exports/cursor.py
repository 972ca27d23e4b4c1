"""Incremental sync: `X-Export-Cursor` on every export, `cursor=` to get what changed since.

The guarantee: an export with `cursor=C` holds every user created, changed or
deleted after the snapshot of the export that answered `C`, at least once,
including writes that were in flight while that export started.

Why not timestamps: `updated_at >= t` misses a write that took its timestamp
before `t` but committed after the export's snapshot was taken (a request
that sets `updated_at`, then spends a moment before COMMIT). The row is not
in the export (not yet committed) and not in the next one (its timestamp is
too old). Clocks of several servers make it worse.

The mechanism (migration 0005): every write to a user takes a number from the
one-row `change_counter` table (`UPDATE ... SET value = value + 1`) and stores
it in `users.change_seq`, in the writer's own transaction, by trigger. The
counter row stays locked until the writer commits, so the next writer gets its
number only after the previous one committed: numbers are taken in commit
order. A snapshot therefore sees every write numbered up to the counter's
value it reads, and none after it. That value, read inside the export's
snapshot, is the export's cursor; `cursor=C` selects `change_seq > C`.
A write in flight when the snapshot was taken is numbered above `C` (its
counter update is not visible yet), so the next sync gets it.

The price: writes to users are serialised from their first user write to
their commit (SQLite serialises every writer anyway). Request transactions
commit right after they write, so this costs microseconds per write; a login
(only `last_login_at` changes) takes no number and never waits.

Also considered: PostgreSQL transaction ids (`pg_snapshot_xmin` and a
per-row `xid8`, as logical-replication tools do) avoid the serialisation but
exist only on PostgreSQL, and logical decoding needs a replication slot per
consumer.

The token is `base64url("v1:<number>")`: opaque to clients, versioned so the
format can change. It is not signed: a forged cursor only changes which of
the rows the caller may export anyway it gets. A cursor ahead of the
database's counter (from another database, or a database restored from a
backup) is refused with 409: the client must start over with a full export.
Deletes are soft in this service; a row removed with SQL `DELETE` leaves no
trace for a sync to see.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from reviewpoint.errors import BadRequest, Conflict
from reviewpoint.exports.columns import ExportSpec
from reviewpoint.users.models import change_counter

HEADER = "X-Export-Cursor"
_TOKEN = re.compile(r"v1:(0|[1-9][0-9]{0,18})")
_LONGEST_TOKEN = 32
_BIGINT_MAX = 2**63 - 1

CURSOR_DESCRIPTION = (
    "The `X-Export-Cursor` of an earlier export: returns only the users created, "
    "changed or deleted since that export's snapshot, deleted ones included, with an "
    "extra last column `is_deleted`. Apply the rows in order, upserting by `id` and "
    "removing those with `is_deleted=true`; repeat with this response's cursor."
)
CURSOR_EXAMPLE = "djE6MTIzNDU"


def encode(position: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{position}".encode()).rstrip(b"=").decode()


def decode(token: str) -> int:
    """The change number a token stands for; ValueError if it is not one we issued."""
    if len(token) > _LONGEST_TOKEN:
        raise ValueError("too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not base64url") from None
    match = _TOKEN.fullmatch(raw)
    if match is None or int(match[1]) > _BIGINT_MAX:
        raise ValueError("unknown format")
    return int(match[1])


def sync_since(
    cursor: Annotated[
        str | None,
        Query(
            description=CURSOR_DESCRIPTION,
            examples=[CURSOR_EXAMPLE],
            openapi_examples={"example": {"value": CURSOR_EXAMPLE}},
            # In the schema only: `decode` refuses longer ones with its own 422.
            json_schema_extra={"maxLength": _LONGEST_TOKEN},
        ),
    ] = None,
) -> int | None:
    """Route dependency: the change number after which to export, or None for everything."""
    if cursor is None:
        return None
    try:
        return decode(cursor)
    except ValueError:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "cursor"),
                    "msg": f"Invalid cursor: pass back an {HEADER} header unchanged",
                    "type": "value_error",
                }
            ]
        ) from None


def refuse_on_minimal(
    cursor: Annotated[
        str | None,
        Query(
            description="Not accepted here (400): incremental sync is on `/export-full`.",
            examples=[CURSOR_EXAMPLE],
            openapi_examples={"example": {"value": CURSOR_EXAMPLE}},
        ),
    ] = None,
) -> None:
    """Route dependency of the minimal export: a sync must see deletions, which
    only the full export (scope `users:export_full`) may show."""
    if cursor is not None:
        raise BadRequest(
            "cursor is accepted only by /api/v1/users/export-full "
            "(incremental sync includes deleted users; scope users:export_full)"
        )


def with_deletions(spec: ExportSpec) -> ExportSpec:
    """A sync's columns: the export's (or the chosen `fields`), then `is_deleted` last
    unless already chosen: applying a sync needs to know which rows to remove."""
    if any(name == "is_deleted" for name, _ in spec.columns):
        return spec
    return ExportSpec(stem=spec.stem, columns=(*spec.columns, ("is_deleted", "boolean")))


class CursorAhead(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "cursor is ahead of this database's changes (issued by another database, "
            "or the database was restored from a backup): run a full export without "
            "cursor and continue from its X-Export-Cursor"
        )


async def snapshot_position(connection: AsyncConnection, *, since: int | None) -> int:
    """The last change number the connection's snapshot sees: the export's cursor.

    Read inside the export's snapshot, before its first row. A `since` beyond
    it is refused: the changes it claims to have seen are not in this database.
    """
    statement = select(change_counter.c.value).where(change_counter.c.id == 1)
    position: int = (await connection.execute(statement)).scalar_one()
    if since is not None and since > position:
        raise CursorAhead()
    return position
