"""The export observer that writes the audit trail (registered in main.py's lifespan).

Each write is a short transaction of its own on the request pool, never on the
export's snapshot connections. Waiting for a request connection while the
export holds its snapshot cannot deadlock: no request holds a request
connection while it waits for an export connection (see db.Database).
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import anyio
from sqlalchemy.exc import SQLAlchemyError

from reviewpoint.audit import service
from reviewpoint.db import Database
from reviewpoint.exports.attempt import OBSERVER_SECONDS, ExportAttempt

log = logging.getLogger("reviewpoint.audit")

# Below the attempt's own bound on an observer, so that a slow database ends in
# this module's timeout, which is logged and counted here like any failed write.
WRITE_SECONDS = OBSERVER_SECONDS * 0.75


class AuditObserver:
    """One record per export attempt: `running` once its 200 is about to stream,
    complete when it ends (a refusal's record is written whole at its end).

    A failed write never fails the export: it is logged at ERROR with the
    request id and counted in `write_failures`.
    """

    # Audit writes that failed in this process since it started (every observer).
    write_failures: ClassVar[int] = 0

    def __init__(self, database: Database) -> None:
        self.database = database

    async def started(self, attempt: ExportAttempt) -> None:
        await self._write(attempt, "start")

    async def finished(self, attempt: ExportAttempt) -> None:
        await self._write(attempt, "end")

    async def _write(self, attempt: ExportAttempt, moment: Literal["start", "end"]) -> None:
        try:
            with anyio.fail_after(WRITE_SECONDS):
                async with self.database.transaction() as session:
                    audit_id = await service.record(session, attempt)
            attempt.audit_id = audit_id
        except Exception as error:
            self._write_failed(attempt, moment, error)

    def _write_failed(
        self, attempt: ExportAttempt, moment: Literal["start", "end"], error: Exception
    ) -> None:
        """The one place where a lost audit write is noted (log, counter, metrics)."""
        AuditObserver.write_failures += 1
        # A database that is down or slow needs one line; anything else is a bug.
        expected = isinstance(error, SQLAlchemyError | OSError)
        log.error(
            "audit record of export request %s (%s) not written at its %s: %s",
            attempt.request_id,
            attempt.outcome,
            moment,
            f"no answer within {WRITE_SECONDS:g} s"
            if isinstance(error, TimeoutError)
            else service.one_line(error),
            exc_info=None if expected else error,
        )


def audit_write_failures() -> int:
    """Audit writes this process failed to make (for metrics)."""
    return AuditObserver.write_failures
