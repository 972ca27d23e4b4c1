"""Conditional exports: an `ETag` on every export, `304 Not Modified` for `If-None-Match`.

An export's bytes are a function of the users rows, the request's parameters
and this release's code. The rows are versioned by the change counter
(`cursor.py`): every create, change or delete of a user takes a number, so
the counter's value names the state of the data an export sees. The entity
tag hashes that value with the normalised request and the service version;
a tag that still matches means a new export would hold what the client has.

The tag's forms (RFC 9110 8.8.3):

- `"<hex>"` (strong) for CSV, NDJSON and JSON sent as they are: the same data,
  parameters and release give the same bytes;
- `W/"<hex>"` (weak) for XLSX, whose zip entries carry the time of writing,
  and for any gzip-encoded export, whose bytes depend on zlib and where the
  chunks were flushed. Same content, not the same bytes (as nginx does).

`If-None-Match` is compared weakly (RFC 9110 13.1.2), so a copy saved from
either form revalidates. Exports never answer ranges, so nothing needs the
strong comparison.

Not validated: exports with `last_login_at`. A login takes no change number
(by design, so that logins never wait on the counter, migration 0005), so the
counter cannot tell when that column changed; those exports carry no `ETag`
and always answer in full.

A 304 is decided before any snapshot or admission slot: one read of the
counter on the request pool (the primary, also when exports read from a
replica: a replica lagging behind only turns a 304 into a 200, never the
reverse). It counts against the credential's rate budget like any export call.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.responses import Response

from reviewpoint import __version__, compression
from reviewpoint.db import Database
from reviewpoint.exports import cursor
from reviewpoint.exports.request import ExportRequest

# Columns whose changes the counter does not see (a login is not a change).
UNVERSIONED_COLUMNS = frozenset({"last_login_at"})
# Hex digits of SHA-256 kept: 128 bits, no collision between two versions of one export.
_TAG_HEX = 32

ETAG_EXAMPLE = '"3f0c2a9d41b7e6c58d20f1a4b9e7c312"'
IF_NONE_MATCH_DESCRIPTION = (
    "The `ETag` of an earlier export (or a comma-separated list, or `*`): if the "
    "export would still hold the same, the answer is `304 Not Modified` without a "
    "body. Compared weakly: `W/` prefixes are ignored."
)
ETAG_DESCRIPTION = (
    "The version of this export: its data (any change to a user changes it), its "
    "parameters and the service release. Strong for CSV, NDJSON and JSON sent "
    "uncompressed; weak (`W/`) for XLSX and gzip-encoded exports. Send it back in "
    "`If-None-Match` to get 304 while nothing changed. Absent when `fields` has "
    "`last_login_at` (logins do not version the data)."
)


@dataclass(frozen=True)
class Revalidation:
    """What a conditional export asks: is my copy current, in the encoding I accept?"""

    if_none_match: str
    accept_encoding: str


def revalidation(
    request: Request,
    if_none_match: Annotated[
        str | None,
        Header(
            description=IF_NONE_MATCH_DESCRIPTION,
            examples=[ETAG_EXAMPLE],
            openapi_examples={"example": {"value": ETAG_EXAMPLE}},
        ),
    ] = None,
) -> Revalidation | None:
    """Route dependency: the request's validators, or None for an unconditional export.

    Repeated `If-None-Match` lines are one list (RFC 9110 5.3); the parameter
    only documents the header, which holds the first.
    """
    if if_none_match is None:
        return None
    listed = ", ".join(request.headers.getlist("if-none-match"))
    return Revalidation(listed, request.headers.get("accept-encoding", ""))


Conditional = Annotated[Revalidation | None, Depends(revalidation)]


def validates(request: ExportRequest) -> bool:
    """Whether the counter versions everything this export holds."""
    return not any(name in UNVERSIONED_COLUMNS for name, _ in request.spec.columns)


def _normalised(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def opaque_tag(request: ExportRequest, position: int) -> str:
    """The quoted tag, without `W/`, of `request` answered at data version `position`.

    Every field of the filters and options goes in, so a parameter added later
    changes the tag without touching this. `request.view` is what else decides
    the bytes for this caller (a credential's limits); the anonymization key
    goes in as a fingerprint, never itself.
    """
    identity = {
        "service": __version__,
        "data": position,
        "export": request.spec.stem,
        "columns": [list(column) for column in request.spec.columns],
        "format": request.format.name,
        "options": asdict(request.options),
        "filters": {name: _normalised(value) for name, value in asdict(request.filters).items()},
        "view": request.view,
        # Which key and mode: a new REVIEWPOINT_ANONYMIZE_KEY changes every pseudonym.
        "anonymization": None
        if request.anonymization is None
        else {
            "key": request.anonymization.key.fingerprint,
            "day": request.anonymization.day,
        },
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:_TAG_HEX] + '"'


def compressed(request: ExportRequest, accept_encoding: str) -> bool:
    """Whether this export goes out gzip-encoded (`ExportResponse` decides the same way)."""
    media_type = request.format.media_type
    return media_type not in compression.EXCLUDED_CONTENT_TYPES and compression.accepts_gzip(
        accept_encoding
    )


def entity_tag(request: ExportRequest, position: int, *, gzip: bool = False) -> str:
    """The `ETag` of the representation sent: weak unless its bytes are reproducible."""
    tag = opaque_tag(request, position)
    return tag if request.format.name != "xlsx" and not gzip else weaken(tag)


def weaken(tag: str) -> str:
    return tag if tag.startswith("W/") else f"W/{tag}"


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def matches(if_none_match: str, tag: str) -> bool:
    """RFC 9110 13.1.2: `*`, or any listed tag equal to `tag` by weak comparison."""
    wanted = _opaque(tag)
    for candidate in _split(if_none_match):
        if candidate == "*" or _opaque(candidate) == wanted:
            return True
    return False


def _split(field: str) -> list[str]:
    """The entity tags of a field value; commas inside quotes do not split (8.8.3)."""
    tags: list[str] = []
    current: list[str] = []
    quoted = False
    for character in field:
        if character == '"':
            quoted = not quoted
        if character == "," and not quoted:
            tags.append("".join(current).strip())
            current = []
        else:
            current.append(character)
    tags.append("".join(current).strip())
    return [tag for tag in tags if tag]


async def current_tag(
    database: Database, request: ExportRequest, revalidation: Revalidation
) -> str | None:
    """The export's `ETag` if `If-None-Match` names it (the client's copy is current), else None.

    One short read of the counter on the request pool: no snapshot is held for
    the export, and a write committed right after it is simply the next
    version. A sync cursor ahead of the database is still a 409, as without
    `If-None-Match`.
    """
    if not validates(request):
        return None
    async with database.transaction(read_only=True) as session:
        connection = await session.connection()
        position = await cursor.snapshot_position(connection, since=request.filters.since)
    gzip = compressed(request, revalidation.accept_encoding)
    tag = entity_tag(request, position, gzip=gzip)
    return tag if matches(revalidation.if_none_match, tag) else None


def headers(request: ExportRequest, position: int) -> dict[str, str]:
    """The 200's `ETag` as sent uncompressed (`ExportResponse` weakens it when it gzips)."""
    return {"ETag": entity_tag(request, position)} if validates(request) else {}


def not_modified(request: ExportRequest, tag: str, *, headers: dict[str, str]) -> Response:
    """The 304: no body; the `ETag` and `Vary` the 200 would carry (RFC 9110 15.4.5).

    Not `X-Export-Rows` nor `X-Export-Cursor`: they describe a body, and the
    client's copy already has them (its cursor is the same: the data did not move).
    `Cache-Control: no-store` comes from `cache_control.py`, as on every API answer.
    """
    response = Response(status_code=304, headers={**headers, "ETag": tag})
    if request.format.media_type not in compression.EXCLUDED_CONTENT_TYPES:
        response.headers["Vary"] = "Accept-Encoding"
    return response
