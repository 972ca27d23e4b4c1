"""The seed's four endpoints under /api/v1/users."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from reviewpoint.admission.gate import Admission, AdmissionDep
from reviewpoint.auth.deps import ExportPrincipal, require_feature, require_scope
from reviewpoint.config import AppSettings, Settings
from reviewpoint.db import Database, DatabaseDep
from reviewpoint.errors import BadRequest
from reviewpoint.exports import cursor
from reviewpoint.exports.attempt import ExportAttempt, TrackedExport, track_export
from reviewpoint.exports.encoders import FULL, MINIMAL, ExportSpec
from reviewpoint.exports.stream import CsvStreamingResponse, open_export

router = APIRouter(prefix="/api/v1/users")

_EXPORT_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"description": "Missing, unknown, expired or revoked credentials"},
    403: {"description": "Feature disabled, scope missing, or not an administrator"},
    429: {
        "description": "Rate limit or concurrency cap reached; retry after `Retry-After` "
        "seconds. `RateLimit-Policy` and `RateLimit` describe the budget."
    },
    503: {"description": "Database unavailable or busy; nothing was sent (see `Retry-After`)"},
}


def _csv_example(text: str) -> dict[int | str, dict[str, object]]:
    return {
        200: {
            "description": "CSV download",
            "content": {"text/csv": {"example": text}},
            "headers": {
                cursor.HEADER: {
                    "description": "Where this export's snapshot stands in the change "
                    "history: pass it back as `cursor=` to /export-full to get what "
                    "changed since.",
                    "schema": {"type": "string", "example": cursor.CURSOR_EXAMPLE},
                }
            },
        }
    }


async def _csv_response(
    database: Database,
    admission: Admission,
    settings: Settings,
    spec: ExportSpec,
    *,
    email: str | None,
    principal: ExportPrincipal,
    attempt: ExportAttempt,
    since: int | None = None,
) -> CsvStreamingResponse:
    attempt.principal = principal
    slots, budget = await admission.admit_export(principal.key)
    body = await open_export(
        database.export_engine,
        spec,
        email=email,
        chunk_rows=settings.export_chunk_rows,
        connections=settings.export_connections,
        attempt=attempt,
        admission=slots,
        since=since,
    )
    return CsvStreamingResponse(
        body,
        filename=spec.filename,
        send_timeout=settings.export_send_timeout,
        max_seconds=settings.export_max_seconds,
        headers={**budget.headers(), cursor.HEADER: cursor.encode(body.position)},
    )


class ExportAliveResponse(BaseModel):
    status: Literal["users export alive"] = "users export alive"


class ExportSimpleResponse(BaseModel):
    users: Literal["export simple status"] = "export simple status"


@router.get(
    "/export",
    summary="Export users as CSV (minimal format)",
    # CsvStreamingResponse takes no status_code, so FastAPI cannot infer the
    # documented one; without this, generating /openapi.json fails.
    status_code=200,
    description=(
        "Every live user, ordered by id, as CSV with columns `id,email,name`. "
        "Needs an API key with scope `users:export` (or `users:export_full`) "
        "or an administrator's bearer token. `email` narrows the export to one "
        "address (case-insensitive); `format` must be `csv`."
    ),
    tags=["User Management", "Export"],
    response_class=CsvStreamingResponse,
    responses={
        **_csv_example("id,email,name\r\n123,john@example.com,John Doe\r\n"),
        400: {"description": "Unsupported format"},
        **_EXPORT_ERRORS,
    },
    # track_export first: it must see every refusal the others raise.
    dependencies=[
        Depends(track_export, scope="function"),
        Depends(require_feature("users:export")),
    ],
)
async def export_users_csv(
    attempt: TrackedExport,
    database: DatabaseDep,
    admission: AdmissionDep,
    settings: AppSettings,
    principal: Annotated[ExportPrincipal, Depends(require_scope("users:export"))],
    email: Annotated[str | None, Query(description="Filter by specific email address")] = None,
    format: Annotated[str, Query(description="Export format (only csv supported)")] = "csv",
    _no_cursor: Annotated[None, Depends(cursor.refuse_on_minimal)] = None,
) -> CsvStreamingResponse:
    if format.lower() != "csv":
        raise BadRequest("Unsupported format. Only 'csv' is supported.")
    return await _csv_response(
        database, admission, settings, MINIMAL, email=email, principal=principal, attempt=attempt
    )


@router.get(
    "/export-full",
    summary="Export users as CSV (complete format)",
    status_code=200,
    description=(
        "Every live user, ordered by id, with "
        "`id,email,name,created_at,updated_at,is_active,is_admin`. Timestamps are "
        "ISO 8601 UTC ending in `Z`, booleans `true`/`false`. Needs an API key "
        "with scope `users:export_full` or an administrator's bearer token. "
        "With `cursor`, an incremental sync: only the users created, changed or "
        "deleted since the export that returned that cursor, deleted ones "
        "included, with `is_deleted` as an extra last column."
    ),
    tags=["User Management", "Export"],
    response_class=CsvStreamingResponse,
    responses={
        **_csv_example(
            "id,email,name,created_at,updated_at,is_active,is_admin\r\n"
            "123,john@example.com,John Doe,2025-01-08T10:30:00Z,2025-01-08T15:45:00Z,true,false\r\n"
        ),
        409: {"description": "`cursor` is ahead of this database: start over without it"},
        422: {"description": "`cursor` is not one this service issued"},
        **_EXPORT_ERRORS,
    },
    dependencies=[
        Depends(track_export, scope="function"),
        Depends(require_feature("users:export_full")),
    ],
)
async def export_users_full_csv(
    attempt: TrackedExport,
    database: DatabaseDep,
    admission: AdmissionDep,
    settings: AppSettings,
    principal: Annotated[ExportPrincipal, Depends(require_scope("users:export_full"))],
    since: Annotated[int | None, Depends(cursor.sync_since)],
) -> CsvStreamingResponse:
    spec = FULL if since is None else cursor.with_deletions(FULL)
    return await _csv_response(
        database,
        admission,
        settings,
        spec,
        email=None,
        principal=principal,
        attempt=attempt,
        since=since,
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
