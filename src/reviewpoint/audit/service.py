"""The audit trail's rules: what a record holds, listing, retention, interrupted exports."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint.audit import models, repository
from reviewpoint.audit.models import ExportAudit
from reviewpoint.audit.repository import AuditQuery, DayTotal
from reviewpoint.audit.schemas import ActorRef
from reviewpoint.config import Settings
from reviewpoint.db import EXPORT_STATEMENT_TIMEOUT_MS, Database, utcnow
from reviewpoint.exports.attempt import ExportAttempt

log = logging.getLogger("reviewpoint.audit")

INTERRUPTED = "interrupted (server stopped)"
# An `aborted` attempt without a detail: the server names its own cut-offs (send
# timeout, time limit), so the client hung up (exports/attempt.py, stream.py).
CLIENT_GONE = "the client disconnected"
# How long past REVIEWPOINT_EXPORT_MAX_SECONDS a live export may still be
# `running`: its first chunk may take one statement timeout before the clock
# starts, closing it lets the chunk in flight finish (another), and a few
# minutes more cover credential checks, admission and the audit writes.
STALE_MARGIN = timedelta(milliseconds=2 * EXPORT_STATEMENT_TIMEOUT_MS, minutes=5)


def _clip(value: str | None, length: int) -> str | None:
    # PostgreSQL text cannot hold NUL; the columns have fixed sizes.
    return None if value is None else value.replace("\x00", "")[:length]


def values_of(attempt: ExportAttempt) -> dict[str, Any]:
    """The record of `attempt` as it stands: named fields only, so no credential
    (secret, digest, token) can reach it."""
    principal = attempt.principal
    detail = attempt.detail
    if attempt.outcome == "aborted" and detail is None:
        detail = CLIENT_GONE
    return {
        "request_id": _clip(attempt.request_id, models.REQUEST_ID_LENGTH),
        "endpoint": _clip(attempt.endpoint, models.ENDPOINT_LENGTH),
        "format": _clip(attempt.format, models.FORMAT_LENGTH),
        # json escapes control characters, NUL included.
        "filters": json.dumps(attempt.filters, ensure_ascii=False),
        "actor_kind": principal.kind if principal else None,
        "actor_id": principal.id if principal else None,
        "actor_name": _clip(principal.name, models.ACTOR_NAME_LENGTH) if principal else None,
        "key_prefix": principal.key_prefix if principal else None,
        "outcome": attempt.outcome,
        "status": attempt.status,
        "detail": _clip(detail, models.DETAIL_LENGTH),
        "rows": attempt.rows,
        "bytes": attempt.bytes,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "duration_seconds": attempt.duration_seconds,
        "fields": ",".join(attempt.fields) if attempt.fields is not None else None,
        "anonymized": attempt.anonymized,
        "client_address": _clip(attempt.client_address, models.CLIENT_ADDRESS_LENGTH),
        "user_agent": _clip(attempt.user_agent, models.USER_AGENT_LENGTH),
    }


async def record(session: AsyncSession, attempt: ExportAttempt) -> int:
    """Write `attempt` as it stands: a new record, or over the one it already has."""
    values = values_of(attempt)
    if attempt.audit_id is not None and await repository.set_values(
        session, audit_id=attempt.audit_id, values=values
    ):
        return attempt.audit_id
    # No record yet: a refusal, or an export whose start could not be written.
    return await repository.add(session, values)


async def list_page(
    session: AsyncSession,
    *,
    actor: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[Sequence[ExportAudit], int]:
    """Records newest first; `actor` is `user:ID`, `api_key:ID` or `cli:UID`
    (ValueError otherwise)."""
    query = _audit_query(actor=actor, outcome=outcome, since=since, until=until)
    return await repository.list_page(session, query=query, offset=offset, limit=limit)


async def daily_totals(
    session: AsyncSession,
    *,
    actor: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[DayTotal]:
    """Attempts and rows sent per UTC day and outcome, over the records `list_page`
    lists for the same filters (so a chart of them adds up to its count)."""
    query = _audit_query(actor=actor, outcome=outcome, since=since, until=until)
    return await repository.daily_totals(session, query=query)


def _audit_query(
    *,
    actor: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditQuery:
    """The filters as the repository takes them (ValueError for a malformed `actor`)."""
    who = ActorRef.parse(actor) if actor is not None else None
    return AuditQuery(
        actor_kind=who.kind if who else None,
        actor_id=who.id if who else None,
        outcome=outcome,
        since=since,
        until=until,
    )


async def prune(session: AsyncSession, *, older_than_days: int, now: datetime | None = None) -> int:
    """Remove records of exports started more than `older_than_days` ago; how many."""
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    return await repository.delete_started_before(session, cutoff=cutoff)


async def fail_interrupted(
    session: AsyncSession, *, settings: Settings, now: datetime | None = None
) -> int:
    """Mark `running` records no live export can still own as failed; how many.

    By age, never "every running record": other workers may be streaming those
    right now. `finished_at` stays empty: when the export really stopped is not
    known (the server that ran it stopped without saying).
    """
    longest = timedelta(seconds=settings.export_max_seconds) + STALE_MARGIN
    cutoff = (now or utcnow()) - longest
    return await repository.fail_running_started_before(session, cutoff=cutoff, detail=INTERRUPTED)


async def fail_interrupted_at_startup(database: Database, settings: Settings) -> None:
    """Start-up's sweep of records a crash left `running`; never stops the server.

    A database that cannot be reached yet is the readiness probe's to report.
    """
    try:
        async with database.transaction() as session:
            marked = await fail_interrupted(session, settings=settings)
    except (SQLAlchemyError, OSError) as error:
        log.error("could not mark interrupted exports in the audit trail: %s", one_line(error))
        return
    if marked:
        log.warning("audit: %d export(s) left running by a stopped server marked failed", marked)


def one_line(error: BaseException) -> str:
    """A database error in one line (SQLAlchemy's own text spans several and quotes SQL)."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"
