"""The audit trail as tests read and seed it: through the app's own model and service."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from reviewpoint.api_keys.models import ApiKey
from reviewpoint.audit import service
from reviewpoint.audit.models import ExportAudit
from reviewpoint.auth.deps import ExportPrincipal
from reviewpoint.db import standalone_session
from reviewpoint.exports.attempt import ExportAttempt, Outcome
from reviewpoint.users.models import User
from tests.conftest import eventually

AUDIT = "/api/v1/exports/audit"


def audit_rows(db_url: str) -> list[dict[str, Any]]:
    """Every record, every column, oldest first."""

    async def run() -> list[dict[str, Any]]:
        async with standalone_session(db_url) as session:
            result = await session.execute(select(ExportAudit.__table__).order_by(ExportAudit.id))
            return [dict(row) for row in result.mappings()]

    return asyncio.run(run())


def settled_rows(db_url: str, count: int, *, seconds: float = 10.0) -> list[dict[str, Any]]:
    """The records once `count` exist and none is `running` (the last write of an
    export happens after its client has the response); exactly `count` of them."""
    rows: list[dict[str, Any]] = []

    def settled() -> bool:
        nonlocal rows
        rows = audit_rows(db_url)
        return len(rows) >= count and all(row["outcome"] != "running" for row in rows)

    assert eventually(settled, seconds=seconds), rows
    assert len(rows) == count, rows
    return rows


def user_actor(user_id: int, email: str = "someone@example.com") -> ExportPrincipal:
    return ExportPrincipal(kind="user", id=user_id, label=email, name=email)


def key_actor(key_id: int, name: str = "sync", prefix: str = "0123456789ab") -> ExportPrincipal:
    return ExportPrincipal(
        kind="api_key", id=key_id, label=f"{name} ({prefix})", name=name, key_prefix=prefix
    )


def add_record(
    db_url: str,
    *,
    started_at: datetime,
    outcome: Outcome = "completed",
    status: int | None = 200,
    actor: ExportPrincipal | None = None,
    endpoint: str = "export-full",
    rows: int = 0,
    fields: tuple[str, ...] | None = None,
    anonymized: str | None = None,
) -> int:
    """A record as the audit observer writes it for an attempt that began at `started_at`."""
    attempt = ExportAttempt(
        endpoint=endpoint,
        format="csv",
        filters={},
        request_id=uuid.uuid4().hex,
        client_address="10.0.0.7",
        user_agent="records.py",
        started_at=started_at,
        principal=actor,
        outcome=outcome,
        status=status,
        rows=rows,
        bytes=rows * 40,
        finished_at=None if outcome == "running" else started_at + timedelta(seconds=2),
        fields=fields,
        anonymized=anonymized,
    )

    async def run() -> int:
        async with standalone_session(db_url) as session:
            return await service.record(session, attempt)

    return asyncio.run(run())


def stored_digests(db_url: str) -> list[str]:
    """Every API-key digest and password hash the database holds."""

    async def run() -> list[str]:
        async with standalone_session(db_url) as session:
            keys = await session.scalars(select(ApiKey.secret_hash))
            users = await session.scalars(select(User.hashed_password))
            return [*keys, *users]

    return asyncio.run(run())
