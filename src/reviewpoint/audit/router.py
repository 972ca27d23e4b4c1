"""Admins read the export audit trail over HTTP (the CLI reads the same service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from reviewpoint.audit import service
from reviewpoint.audit.schemas import (
    ACTOR_FORMAT,
    ACTOR_PATTERN,
    INSTANT_FORMAT,
    ActorText,
    ExportAuditPublic,
    ExportAuditsPublic,
    Instant,
)
from reviewpoint.auth.deps import BEARER_ERRORS, CurrentAdmin
from reviewpoint.db import Session
from reviewpoint.exports.attempt import Outcome
from reviewpoint.inputs import PageOffset

router = APIRouter(
    prefix="/api/v1/exports",
    tags=["Export audit"],
    responses=BEARER_ERRORS,
)

_EXAMPLE = {
    "data": [
        {
            "id": 43,
            "request_id": "9b2e61d0c4a84f7e8d35a0c1f6e2b9d4",
            "endpoint": "export",
            "format": "csv",
            "filters": {"email": "jane@example.com"},
            "actor": {"kind": "user", "id": 1, "name": "admin@example.com", "key_prefix": None},
            "outcome": "aborted",
            "status": 200,
            "detail": "the client accepted no data for 30 s",
            "rows": 0,
            "bytes": 0,
            "started_at": "2026-11-26T09:15:02.500000Z",
            "finished_at": "2026-11-26T09:15:32.610000Z",
            "duration_seconds": 30.11,
            "client_address": "10.0.4.20",
            "user_agent": "curl/8.5.0",
            "fields": ["id", "email", "name", "created_at"],
            "anonymized": "true",
        },
        {
            "id": 42,
            "request_id": "4f1c9a0e2b7d4c55a1f3e8d6b2a9c7e1",
            "endpoint": "export-full",
            "format": "csv",
            "filters": {},
            "actor": {
                "kind": "api_key",
                "id": 3,
                "name": "nightly sync",
                "key_prefix": "3f9a0c1d2e4b",
            },
            "outcome": "completed",
            "status": 200,
            "detail": None,
            "rows": 120000,
            "bytes": 14500000,
            "started_at": "2026-11-26T02:00:00.120000Z",
            "finished_at": "2026-11-26T02:00:03.870000Z",
            "duration_seconds": 3.75,
            "client_address": "10.0.4.17",
            "user_agent": "python-httpx/0.28.1",
            "fields": ["id", "name", "created_at"],
            "anonymized": "false",
        },
    ],
    "count": 2,
}


@router.get(
    "/audit",
    summary="List export attempts (audit trail)",
    description=(
        "One record per call to an export endpoint, newest first: who (the user or "
        "API key, or null when no credential was recognised), which endpoint, format "
        "and filters, how it ended, the HTTP status, rows and bytes sent, when, from "
        "which address and client. `outcome` is `running` (streaming now), "
        "`completed`, `failed` (the database failed, before or during the stream), "
        "`aborted` (the client hung up, stopped reading, or the export hit its time "
        "limit), `denied` (401/403), `limited` (429), `invalid` (400/409/422) or "
        "`not_modified` (304: the caller's copy, named by `If-None-Match`, is current). "
        "Filters combine; `since` and `until` compare the start time. "
        "Paginated like `GET /api/v1/users`."
    ),
    responses={
        200: {"content": {"application/json": {"example": _EXAMPLE}}},
        422: {
            "description": "A filter or page parameter is invalid; `loc` names it, e.g. "
            '`["query", "actor"]`'
        },
    },
)
async def list_export_audit(
    session: Session,
    admin: CurrentAdmin,
    offset: PageOffset = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Records per page")] = 100,
    actor: Annotated[
        ActorText,
        Query(
            description=f"Only this caller: {ACTOR_FORMAT}",
            examples=["api_key:3", "user:1"],
            # In the schema only: ActorRef.parse checks it, with its own message.
            json_schema_extra={"pattern": ACTOR_PATTERN},
        ),
    ] = None,
    outcome: Annotated[Outcome | None, Query(description="Only attempts that ended so")] = None,
    since: Annotated[
        Instant,
        Query(
            description=f"Started at or after this: {INSTANT_FORMAT}",
            examples=["2026-11-26T00:00:00Z"],
        ),
    ] = None,
    until: Annotated[
        Instant,
        Query(
            description=f"Started before this: {INSTANT_FORMAT}",
            examples=["2026-11-27T00:00:00+01:00"],
        ),
    ] = None,
) -> ExportAuditsPublic:
    page, count = await service.list_page(
        session,
        actor=actor,
        outcome=outcome,
        since=since,
        until=until,
        offset=offset,
        limit=limit,
    )
    return ExportAuditsPublic(data=[ExportAuditPublic.of(record) for record in page], count=count)
