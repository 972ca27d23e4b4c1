"""The seed's four endpoints under /api/v1/users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.responses import Response

from reviewpoint.admission.gate import Admission, AdmissionDep
from reviewpoint.auth.deps import ExportPrincipal, require_feature, require_scope
from reviewpoint.config import AppSettings, Settings
from reviewpoint.db import Database, DatabaseDep
from reviewpoint.exports import body_schemas, conditional, cursor
from reviewpoint.exports.anonymize import PseudonymsDep
from reviewpoint.exports.attempt import ExportAttempt, TrackedExport, track_export
from reviewpoint.exports.columns import CHOOSABLE, FULL, MINIMAL, ColumnKind, ExportSpec
from reviewpoint.exports.formats import FORMATS
from reviewpoint.exports.formats.base import Options
from reviewpoint.exports.request import ExportRequest
from reviewpoint.exports.schemas import (
    ExportParameters,
    FullExportParameters,
    refuse_fields_on_minimal,
)
from reviewpoint.exports.stream import ExportResponse, open_export

router = APIRouter(prefix="/api/v1/users")

_EXPORT_ERRORS: dict[int | str, dict[str, object]] = {
    400: {
        "description": "Unsupported format, unknown or repeated field, an option "
        "the format does not take, or `cursor` or `fields` on /export"
    },
    401: {
        "description": "Missing, malformed, unknown, expired or revoked credentials, "
        "including a key whose issuing admin is no longer an active administrator, "
        "or a key sent as a bearer token instead of in `X-API-Key`",
        "headers": {
            "WWW-Authenticate": {
                "description": '`Bearer, ApiKey header="X-API-Key"`',
                "schema": {"type": "string"},
            }
        },
    },
    403: {
        "description": "Feature disabled (`users:export_anonymized` for `anonymize`), "
        "scope missing, not an administrator, or beyond the API key's data limits (a "
        "field it may not export, `anonymize=false` or `email` for an anonymized-only "
        "key): `detail` says which"
    },
    422: {
        "description": "A parameter is invalid (a timestamp without a zone, a negative "
        "`after_id`, ...): `detail` names it"
    },
    429: {
        "description": "Rate limit or concurrency cap reached; retry after `Retry-After` "
        "seconds. `RateLimit-Policy` and `RateLimit` describe the budget."
    },
    503: {
        "description": "Database unavailable or busy; nothing was sent (see `Retry-After`). "
        "Also `anonymize` on a server started without REVIEWPOINT_ANONYMIZE_KEY."
    },
}

_NOT_MODIFIED: dict[int | str, dict[str, object]] = {
    304: {
        "description": "`If-None-Match` names this export's current `ETag`: the copy the "
        "caller holds is current. No body; counts against the rate limit, holds no "
        "export slot.",
        "headers": {
            "ETag": {
                "description": "The export's current `ETag` (as on the 200)",
                "schema": {"type": "string", "example": conditional.ETAG_EXAMPLE},
            }
        },
    }
}


def _download(
    spec: ExportSpec,
    example: dict[str, object],
    *,
    possible: Mapping[str, ColumnKind],
    required: Sequence[str],
) -> dict[int | str, dict[str, object]]:
    """The 200 of an export: one media type per format, each with the schema of its
    records (`possible` columns, `required` ones always there) and an example
    written by that format."""
    columns = spec.columns
    content: dict[str, dict[str, object]] = {}
    for export_format in FORMATS.values():
        if export_format.name == "csv":
            schema = body_schemas.csv_records(possible, required)
        else:
            schema = body_schemas.typed_records(possible, required)
        content[export_format.media_type] = {"schema": schema}
        if not export_format.media_type.startswith("application/vnd."):
            encoded = export_format.encode(columns, [example], Options())
            content[export_format.media_type]["example"] = encoded.decode()
    return {
        200: {
            "description": f"`{spec.stem}.<format>`, streamed",
            "content": content,
            "headers": {
                "X-Export-Rows": {
                    "description": "How many records the body holds when complete, counted "
                    "in the export's snapshot before the first byte",
                    "schema": {"type": "integer"},
                },
                cursor.HEADER: {
                    "description": "Where this export's snapshot stands in the change "
                    "history: pass it back as `cursor=` to /export-full to get what "
                    "changed since.",
                    "schema": {"type": "string", "example": cursor.CURSOR_EXAMPLE},
                },
                "Content-Disposition": {
                    "description": f'`attachment; filename="{spec.stem}.<format>"`',
                    "schema": {"type": "string"},
                },
                "ETag": {
                    "description": conditional.ETAG_DESCRIPTION,
                    "schema": {"type": "string", "example": conditional.ETAG_EXAMPLE},
                },
            },
        },
        **_NOT_MODIFIED,
    }


async def _export_response(
    database: Database,
    admission: Admission,
    settings: Settings,
    request: ExportRequest,
    *,
    principal: ExportPrincipal,
    attempt: ExportAttempt,
    revalidation: conditional.Revalidation | None,
) -> Response:
    attempt.principal = principal
    attempt.delivers(request)
    if revalidation is not None:
        tag = await conditional.current_tag(database, request, revalidation)
        if tag is not None:
            budget = await admission.admit_revalidation(principal.key)
            await attempt.not_modified()
            return conditional.not_modified(request, tag, headers=budget.headers())
    slots, budget = await admission.admit_export(principal.key)
    body = await open_export(
        database.export_engine,
        request,
        chunk_rows=settings.export_chunk_rows,
        connections=settings.export_connections,
        attempt=attempt,
        admission=slots,
    )
    return ExportResponse(
        body,
        send_timeout=settings.export_send_timeout,
        max_seconds=settings.export_max_seconds,
        headers={**budget.headers(), **conditional.headers(request, body.position)},
    )


class ExportAliveResponse(BaseModel):
    status: Literal["users export alive"] = "users export alive"


class ExportSimpleResponse(BaseModel):
    users: Literal["export simple status"] = "export simple status"


_EXAMPLE: dict[str, object] = {
    "id": 123,
    "email": "john@example.com",
    "name": "John Doe",
    "created_at": datetime(2025, 1, 8, 10, 30, tzinfo=UTC),
    "updated_at": datetime(2025, 1, 8, 15, 45, tzinfo=UTC),
    "is_active": True,
    "is_admin": False,
}
_FILTERS = (
    "Filters, all applied in the database and combined with AND: `email`, `is_active`, "
    "`is_admin`, `created_after`, `created_before`, `updated_since`, `after_id` (resume "
    "after the last id received), `limit`. Every response carries `X-Export-Rows`, the "
    "number of records the complete body holds."
)


@router.get(
    "/export",
    summary="Export users (minimal columns)",
    # ExportResponse takes no status_code, so FastAPI cannot infer the
    # documented one; without this, generating /openapi.json fails.
    status_code=200,
    description=(
        "Every live user that passes the filters, ordered by id, with columns "
        "`id,email,name`, as CSV (default), NDJSON, JSON or XLSX (`format`). "
        f"{_FILTERS} Needs an API key with scope `users:export` (or `users:export_full`) "
        "or an administrator's bearer token."
    ),
    tags=["User Management", "Export"],
    # The default format's media type; `responses` lists every format's.
    response_class=ExportResponse,
    responses={
        **_download(MINIMAL, _EXAMPLE, possible=dict(MINIMAL.columns), required=MINIMAL.header),
        **_EXPORT_ERRORS,
    },
    # track_export first: it must see every refusal the others raise.
    dependencies=[
        Depends(track_export, scope="function"),
        Depends(require_feature("users:export")),
    ],
)
async def export_users(
    attempt: TrackedExport,
    database: DatabaseDep,
    admission: AdmissionDep,
    settings: AppSettings,
    principal: Annotated[ExportPrincipal, Depends(require_scope("users:export"))],
    parameters: Annotated[ExportParameters, Query()],
    pseudonyms: PseudonymsDep,
    _no_cursor: Annotated[None, Depends(cursor.refuse_on_minimal)] = None,
    _no_fields: Annotated[None, Depends(refuse_fields_on_minimal)] = None,
    revalidation: conditional.Conditional = None,
) -> Response:
    request = parameters.export_request(MINIMAL, pseudonyms=pseudonyms, limits=principal.limits)
    return await _export_response(
        database,
        admission,
        settings,
        request,
        principal=principal,
        attempt=attempt,
        revalidation=revalidation,
    )


@router.get(
    "/export-full",
    summary="Export users (all columns, or those chosen)",
    status_code=200,
    description=(
        "Every live user that passes the filters, ordered by id, with "
        "`id,email,name,created_at,updated_at,is_active,is_admin` or the columns "
        "`fields` picks. Timestamps are ISO 8601 UTC ending in `Z` (XLSX: Excel dates), "
        f"booleans `true`/`false`. {_FILTERS} Needs an API key with scope "
        "`users:export_full` or an administrator's bearer token. "
        "With `cursor`, an incremental sync: only the users created, changed or "
        "deleted since the export that returned that cursor, deleted ones "
        "included, with `is_deleted` as an extra last column."
    ),
    tags=["User Management", "Export"],
    response_class=ExportResponse,
    responses={
        # `fields` picks any of the columns, so none is always there.
        **_download(FULL, _EXAMPLE, possible=CHOOSABLE, required=()),
        **_EXPORT_ERRORS,
        409: {"description": "`cursor` is ahead of this database: start over without it"},
        422: {
            "description": "A parameter is invalid (a timestamp without a zone, a cursor "
            "this service did not issue, ...): `detail` names it"
        },
    },
    dependencies=[
        Depends(track_export, scope="function"),
        Depends(require_feature("users:export_full")),
    ],
)
async def export_users_full(
    attempt: TrackedExport,
    database: DatabaseDep,
    admission: AdmissionDep,
    settings: AppSettings,
    principal: Annotated[ExportPrincipal, Depends(require_scope("users:export_full"))],
    parameters: Annotated[FullExportParameters, Query()],
    since: Annotated[int | None, Depends(cursor.sync_since)],
    pseudonyms: PseudonymsDep,
    revalidation: conditional.Conditional = None,
) -> Response:
    request = parameters.export_request(
        FULL, since=since, pseudonyms=pseudonyms, limits=principal.limits
    )
    return await _export_response(
        database,
        admission,
        settings,
        request,
        principal=principal,
        attempt=attempt,
        revalidation=revalidation,
    )


@router.get(
    "/export-alive",
    summary="Test export router health",
    description="No authentication. Feature flag `users:export_alive`.",
    tags=["Health", "Export"],
    responses={403: {"description": "Export alive feature not enabled"}},
    dependencies=[Depends(require_feature("users:export_alive"))],
)
async def export_alive() -> ExportAliveResponse:
    return ExportAliveResponse()


@router.get(
    "/export-simple",
    summary="Simple export test endpoint",
    description="No authentication. Feature flag `users:export_simple`.",
    tags=["Health", "Export"],
    responses={403: {"description": "Export simple feature not enabled"}},
    dependencies=[Depends(require_feature("users:export_simple"))],
)
async def export_simple() -> ExportSimpleResponse:
    return ExportSimpleResponse()
