"""The error tree services raise, and the one place that turns it into HTTP."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("reviewpoint.errors")


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


class TooManyRequests(AppError):
    status_code = 429

    def __init__(
        self, detail: str, *, retry_after: int, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail, headers={**(headers or {}), "Retry-After": str(retry_after)})
        self.retry_after = retry_after


class ServiceUnavailable(AppError):
    status_code = 503

    def __init__(
        self,
        detail: str,
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        super().__init__(detail, headers=extra)
        self.retry_after = retry_after


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


async def _render_database_down(request: Request, exc: Exception) -> JSONResponse:
    # A lost or refused database connection is the operator's problem, not the
    # client's: say so with 503 so load balancers and clients retry later.
    log.error("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
    return JSONResponse({"detail": "Database unavailable"}, status_code=503)


# SQLSTATE classes that mean "the database cannot serve us right now" rather than
# "this statement is wrong": connection exceptions (08), invalid authorization (28),
# unknown database (3D), insufficient resources such as too many connections (53),
# operator intervention such as a shutdown or terminated backend (57).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})


async def _render_database_error(request: Request, exc: Exception) -> JSONResponse:
    # asyncpg reports a missing database, a bad password or a full server as a
    # plain DBAPIError; only its SQLSTATE tells an outage from a bug.
    assert isinstance(exc, DBAPIError)
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    if exc.connection_invalidated or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES:
        return await _render_database_down(request, exc)
    return await _render_unexpected(request, exc)


async def _render_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _render_app_error)
    app.add_exception_handler(OperationalError, _render_database_down)
    app.add_exception_handler(InterfaceError, _render_database_down)
    app.add_exception_handler(DBAPIError, _render_database_error)
    app.add_exception_handler(OSError, _render_database_down)
    app.add_exception_handler(Exception, _render_unexpected)
