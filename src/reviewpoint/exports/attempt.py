"""One call to an export endpoint, followed from its first dependency to its last byte.

Every call ends in exactly one outcome, reported once to the observers the app
registers (the audit trail, metrics):

- `denied` (401/403: no, bad or insufficient credentials, or the feature is off),
  `limited` (429), `invalid` (400/409/422: a parameter the export cannot serve) and
  `failed` (503 or an error of ours) end the call before any byte is sent;
- `completed`, `failed` (the database broke mid-stream; the response is
  aborted) and `aborted` (the client hung up, stopped reading past the send
  timeout, or the export ran past its time limit) end a streamed response,
  whose status stays the 200 that was already sent;
- `not_modified` (304) answers a conditional request whose `If-None-Match`
  still matches (`conditional.py`): no body, no snapshot.

Observers must never make an export fail: each call into one is bounded in
time and its errors are logged (`ExportObserver`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

import anyio
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

from reviewpoint.db import utcnow
from reviewpoint.errors import (
    AppError,
    NotAuthenticated,
    NotPermitted,
    TooManyRequests,
    is_database_unavailable,
)
from reviewpoint.request_id import current_request_id

if TYPE_CHECKING:
    from reviewpoint.auth.deps import ExportPrincipal
    from reviewpoint.exports.request import ExportRequest

log = logging.getLogger("reviewpoint.exports")

Outcome = Literal[
    "running",
    "completed",
    "failed",
    "aborted",
    "denied",
    "limited",
    "invalid",
    "not_modified",
]
# Query parameters recorded as the export's filters: named, never "all of them",
# so a credential someone pastes into a URL is not copied into the audit trail.
RECORDED_PARAMETERS = (
    "email",
    "is_active",
    "is_admin",
    "created_after",
    "created_before",
    "updated_since",
    "after_id",
    "limit",
    "fields",
    "cursor",
    "anonymize",
)
# Longest wait for one observer at the start or end of an export.
OBSERVER_SECONDS = 2.0
_TEXT_LIMIT = 255


class ExportObserver(Protocol):
    """Told when an export starts streaming and, once, how any call ended."""

    async def started(self, attempt: ExportAttempt) -> None: ...

    async def finished(self, attempt: ExportAttempt) -> None: ...


@dataclass
class ExportAttempt:
    endpoint: str
    format: str | None
    filters: dict[str, str]
    request_id: str
    client_address: str | None
    user_agent: str | None
    observers: Sequence[ExportObserver] = ()
    started_at: datetime = field(default_factory=utcnow)
    principal: ExportPrincipal | None = None
    outcome: Outcome = "running"
    status: int | None = None
    detail: str | None = None
    rows: int = 0
    bytes: int = 0
    finished_at: datetime | None = None
    # Set by the audit trail once its record exists, so log lines can name it.
    audit_id: int | None = None
    streaming: bool = False
    # What the export holds, once its parameters (and the key's limits) are
    # applied: the columns and the `anonymize` mode. None while unknown.
    fields: tuple[str, ...] | None = None
    anonymized: str | None = None

    def delivers(self, request: ExportRequest) -> None:
        """Note the columns and anonymization `request` answers with (for the audit trail)."""
        self.fields = tuple(request.spec.header)
        anonymization = request.anonymization
        self.anonymized = (
            "false" if anonymization is None else "day" if anonymization.day else "true"
        )

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    async def start_streaming(self) -> None:
        """The export is admitted and its first chunk read: a 200 is about to go out."""
        self.streaming = True
        self.status = 200
        for observer in self.observers:
            await _notify(observer.started, self)

    async def not_modified(self) -> None:
        """The client's copy is current: answered 304, nothing read but the data version."""
        self.status = 304
        await self.finish("not_modified")

    async def finish(self, outcome: Outcome | None = None, *, detail: str | None = None) -> None:
        """End the attempt; only the first call counts. A streamed export still
        `running` when its body closes was cut off on the client's side."""
        if self.outcome != "running":
            return
        self.outcome = outcome or "aborted"
        if detail is not None:
            self.detail = detail[:_TEXT_LIMIT]
        self.finished_at = utcnow()
        with anyio.CancelScope(shield=True):
            for observer in self.observers:
                await _notify(observer.finished, self)

    async def refused(self, error: BaseException) -> None:
        """End an attempt that an exception stopped before its response started."""
        if self.outcome != "running":
            return
        if isinstance(error, AppError):
            self.status, self.detail = error.status_code, error.detail
        elif is_database_unavailable(error):
            # What errors.py answers for it: a 503, not a 500.
            self.status, self.detail = 503, "database unavailable"
        elif isinstance(error, RequestValidationError):
            self.status, self.detail = 422, "invalid query parameters"
        else:
            self.status, self.detail = 500, "internal error"
        await self.finish(_outcome_of(error), detail=self.detail)


def _outcome_of(error: BaseException) -> Outcome:
    if isinstance(error, NotAuthenticated | NotPermitted):
        return "denied"
    if isinstance(error, TooManyRequests):
        return "limited"
    # 409: a sync cursor ahead of the database (exports/cursor.py).
    if isinstance(error, RequestValidationError) or (
        isinstance(error, AppError) and error.status_code in (400, 409, 422)
    ):
        return "invalid"
    return "failed"


async def _notify(event: object, attempt: ExportAttempt) -> None:
    assert callable(event)
    try:
        with anyio.fail_after(OBSERVER_SECONDS):
            await event(attempt)
    except Exception:
        log.exception("export observer %r failed on request %s", event, attempt.request_id)


def _text(value: str | None) -> str | None:
    return None if value is None else value[:_TEXT_LIMIT]


def recorded_filters(parameters: Mapping[str, str | None]) -> dict[str, str]:
    """What an attempt records of its parameters: the named ones, each cut to fit."""
    return {
        name: value[:_TEXT_LIMIT]
        for name in RECORDED_PARAMETERS
        if (value := parameters.get(name)) is not None
    }


async def track_export(request: Request) -> AsyncIterator[ExportAttempt]:
    """Route dependency, declared first on each export route so that it sees every
    refusal the later dependencies raise (feature off, credentials, parameters).

    A call that returns normally hands the attempt to its streaming body, which
    finishes it; the caller the credential check identified, if any, is read
    from `request.state.principal` (set by `auth.deps.require_scope`).
    """
    attempt = ExportAttempt(
        endpoint=request.url.path.rsplit("/", 1)[-1],
        format=_text(request.query_params.get("format", "csv")),
        filters=recorded_filters(request.query_params),
        request_id=current_request_id.get(),
        client_address=request.client.host if request.client else None,
        user_agent=_text(request.headers.get("user-agent")),
        observers=getattr(request.app.state, "export_observers", ()),
    )
    try:
        yield attempt
    except BaseException as error:
        attempt.principal = getattr(request.state, "principal", None)
        await attempt.refused(error)
        raise
    attempt.principal = getattr(request.state, "principal", None)


# Function scope: the dependency ends when the route returns its (streaming)
# response, not after the body is sent; the body finishes the attempt itself.
TrackedExport = Annotated[ExportAttempt, Depends(track_export, scope="function")]
