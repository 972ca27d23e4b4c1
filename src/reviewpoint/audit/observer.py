"""The export observer that writes the audit trail (registered in main.py's lifespan).

Each write is a short transaction of its own on the request pool, never on the
export's snapshot connections. Waiting for a request connection while the
export holds its snapshot cannot deadlock: no request holds a request
connection while it waits for an export connection (see db.Database).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Literal

import anyio
from sqlalchemy.exc import SQLAlchemyError

from reviewpoint.audit import service
from reviewpoint.db import Database
from reviewpoint.exports.attempt import ExportAttempt

log = logging.getLogger("reviewpoint.audit")

Moment = Literal["start", "end"]
# How long an export waits for its audit write: a healthy database answers in a
# few milliseconds; one whose write lock another process holds (SQLite) or
# that is overloaded delays the export by no more than this. The write itself
# goes on beside the export, and is never cancelled half way: a statement
# cancelled in flight can leave its pooled connection unusable.
WAIT_SECONDS = 0.25
# Writes one worker keeps in flight at most; past that (a database that stopped
# answering under a flood of refusals) a write is dropped, logged and counted,
# rather than queue without bound for the request pool.
MAX_PENDING_WRITES = 256
# How long shutdown waits for writes in flight (a write's own limits end it in
# about this much: the pool timeout plus a statement or lock timeout).
CLOSE_SECONDS = 20.0


class WritesBacklogged(Exception):
    """More audit writes are in flight than a worker keeps; this one is dropped."""


class AuditObserver:
    """One record per export attempt: `running` once its 200 is about to stream,
    complete when it ends (a refusal's record is written whole at its end).

    A failed write never fails the export: it is logged at ERROR with the
    request id and counted in `write_failures`.
    """

    # Audit writes that failed in this process since it started (every observer).
    write_failures: ClassVar[int] = 0

    def __init__(self, database: Database, *, on_failure: Callable[[], None] | None = None) -> None:
        self.database = database
        # Metrics' counter of lost records, when metrics are on.
        self._on_failure = on_failure
        self._pending: set[asyncio.Task[None]] = set()
        # Start writes by attempt (dataclasses are unhashable: keyed by id), so
        # the end write follows its start write and updates that record.
        self._starts: dict[int, asyncio.Task[None]] = {}

    async def started(self, attempt: ExportAttempt) -> None:
        task = self._spawn(attempt, "start", self._write(attempt, "start"))
        if task is not None:
            self._starts[id(attempt)] = task
            await self._wait(task)

    async def finished(self, attempt: ExportAttempt) -> None:
        start = self._starts.pop(id(attempt), None)
        task = self._spawn(attempt, "end", self._write(attempt, "end", after=start))
        if task is not None:
            await self._wait(task)

    async def close(self) -> None:
        """Let writes in flight finish (shutdown)."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=CLOSE_SECONDS)

    async def _write(
        self, attempt: ExportAttempt, moment: Moment, after: asyncio.Task[None] | None = None
    ) -> None:
        if after is not None:
            await after  # never raises: failures end in _write_failed
        try:
            async with self.database.transaction() as session:
                audit_id = await service.record(session, attempt)
            attempt.audit_id = audit_id
        except Exception as error:
            self._write_failed(attempt, moment, error)

    def _spawn(
        self, attempt: ExportAttempt, moment: Moment, work: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None] | None:
        if len(self._pending) >= MAX_PENDING_WRITES:
            work.close()
            self._write_failed(
                attempt, moment, WritesBacklogged(f"{MAX_PENDING_WRITES} audit writes in flight")
            )
            return None
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _wait(self, task: asyncio.Task[None]) -> None:
        # Shielded: running out of time stops the waiting, not the write.
        with anyio.move_on_after(WAIT_SECONDS):
            await asyncio.shield(task)

    def _write_failed(self, attempt: ExportAttempt, moment: Moment, error: Exception) -> None:
        """The one place where a lost audit write is noted (log, counter, metrics)."""
        AuditObserver.write_failures += 1
        if self._on_failure is not None:
            self._on_failure()
        # A database that is down or slow, or a full queue, needs one line;
        # anything else is a bug.
        expected = isinstance(error, SQLAlchemyError | OSError | WritesBacklogged)
        log.error(
            "audit record of export request %s (%s) not written at its %s: %s",
            attempt.request_id,
            attempt.outcome,
            moment,
            service.one_line(error),
            exc_info=None if expected else error,
        )


def audit_write_failures() -> int:
    """Audit writes this process failed to make (for metrics)."""
    return AuditObserver.write_failures
