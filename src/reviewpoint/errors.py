"""The error tree services raise, and the one place that turns it into HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

log = logging.getLogger("reviewpoint.errors")
# Seconds a client is asked to wait when the pool or the database is busy.
BUSY_RETRY_AFTER = 2


class AppError(Exception):
    status_code: ClassVar[int] = 400
    # Headers every error of the class carries, such as WWW-Authenticate on a 401.
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        # Headers of this one error, such as the Retry-After of this refusal.
        self.instance_headers = dict(headers or {})

    def response_headers(self) -> dict[str, str]:
        return {**(self.headers or {}), **self.instance_headers}


class BadRequest(AppError):
    status_code = 400


class NotAuthenticated(AppError):
    status_code = 401
    headers: ClassVar[dict[str, str] | None] = {
        "WWW-Authenticate": 'Bearer, ApiKey header="X-API-Key"'
    }


class NotPermitted(AppError):
    status_code = 403


class FeatureDisabled(NotPermitted):
    def __init__(self, feature: str) -> None:
        super().__init__(f"Feature '{feature}' is disabled")
        self.feature = feature


class ResourceNotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class RetryLater(AppError):
    """A refusal the client should retry: it always says when, in `Retry-After`."""

    def __init__(
        self, detail: str, *, retry_after: int, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail, headers={**(headers or {}), "Retry-After": str(retry_after)})


class TooManyRequests(RetryLater):
    status_code = 429


class ServiceUnavailable(RetryLater):
    status_code = 503


class AdmissionStoreUnavailable(ServiceUnavailable):
    """The rate-limit or lease store (Redis) cannot be reached: fail closed, retry soon."""

    def __init__(
        self, detail: str = "Rate limit store unavailable", *, retry_after: int = 5
    ) -> None:
        super().__init__(detail, retry_after=retry_after)


async def _render_app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=exc.response_headers()
    )


def validation_error_response(errors: Iterable[Mapping[str, Any]]) -> JSONResponse:
    """422 naming each failing field by `loc`, `msg` and `type` only.

    FastAPI's default also sends `input` (and `ctx`), which echoes what was
    submitted: a password too short, a whole login form. Field names and
    pydantic's messages are enough to fix a request.
    """
    detail = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _render_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error_response(exc.errors())


# FastAPI turns a body json cannot even decode (invalid UTF-8, nesting deeper than
# the parser's recursion limit) into an undocumented 400 with this detail, while a
# syntax error is a 422; both are invalid input, so both are a 422 naming the body.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _render_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        return validation_error_response(
            [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
        )
    return await http_exception_handler(request, exc)


async def _render_database_down(request: Request, exc: Exception) -> JSONResponse:
    # A lost or refused database connection is the operator's problem, not the
    # client's: say so with 503 so load balancers and clients retry later.
    if _sqlstate(exc) in _CONFLICT_SQLSTATES:
        # Routine under concurrent writes, not an outage: no traceback.
        log.warning("database conflict (SQLSTATE %s): retry later", _sqlstate(exc))
        busy = ServiceUnavailable(
            "Database busy: the transaction conflicted with another; retry",
            retry_after=BUSY_RETRY_AFTER,
        )
    else:
        log.error("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        busy = ServiceUnavailable("Database unavailable", retry_after=BUSY_RETRY_AFTER)
    return await _render_app_error(request, busy)


# SQLSTATE classes that mean "the database cannot serve us right now" rather than
# "this statement is wrong": connection exceptions (08), invalid authorization (28),
# unknown database (3D), insufficient resources such as too many connections (53),
# operator intervention such as a shutdown or terminated backend (57).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})
# A transaction PostgreSQL rolled back to settle a conflict with another one
# (serialization failure, deadlock): the same request succeeds when retried,
# so it is transient like an outage. Not all of class 40: 40002 is a broken
# integrity constraint, a wrong statement.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})


# SQLite result codes that mean the file cannot serve (busy, locked, out of
# memory, read-only, I/O error, corrupt, disk full, cannot open, not a database),
# as opposed to SQLITE_ERROR, a statement that is wrong (e.g. no such table).
_SQLITE_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 26})


def is_database_unavailable(error: BaseException) -> bool:
    """True when the database cannot serve us (retry later), not when a statement is wrong.

    asyncpg reports a missing database, a bad password or a full server as a
    plain DBAPIError, and errors of its own COPY (the export path) unwrapped:
    only the SQLSTATE tells an outage from a bug. sqlite3 reports both kinds as
    OperationalError: only its result code tells them apart. A deadlock or a
    serialization failure counts as unavailable too: retried, the request succeeds.
    """
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlite_code = getattr(error.orig, "sqlite_errorcode", None)
        if sqlite_code is not None:
            return sqlite_code & 0xFF in _SQLITE_UNAVAILABLE_CODES
    if isinstance(
        error,
        OperationalError | InterfaceError | OSError | PoolTimeout | asyncpg.InterfaceError,
    ):
        return True
    sqlstate = _sqlstate(error)
    return sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _CONFLICT_SQLSTATES


def _sqlstate(error: BaseException) -> str:
    """The SQLSTATE of a PostgreSQL error, wrapped by SQLAlchemy or not; '' otherwise."""
    sqlstate = getattr(getattr(error, "orig", None) or error, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else ""


async def _render_database_error(request: Request, exc: Exception) -> JSONResponse:
    if is_database_unavailable(exc):
        return await _render_database_down(request, exc)
    return await _render_unexpected(request, exc)


async def _render_pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    # Every pooled connection stayed busy for the pool timeout: overload, not a bug.
    log.warning("no database connection free on %s %s", request.method, request.url.path)
    busy = ServiceUnavailable(
        "Server busy: no database connection free; retry shortly", retry_after=BUSY_RETRY_AFTER
    )
    return await _render_app_error(request, busy)


async def _render_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _render_app_error)
    app.add_exception_handler(RequestValidationError, _render_validation_error)
    app.add_exception_handler(HTTPException, _render_http_exception)
    app.add_exception_handler(PoolTimeout, _render_pool_exhausted)
    app.add_exception_handler(DBAPIError, _render_database_error)
    app.add_exception_handler(OSError, _render_database_down)
    app.add_exception_handler(Exception, _render_unexpected)
