"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import logging
import sqlite3
from typing import Literal

import asyncpg
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from reviewpoint.db import DatabaseDep
from reviewpoint.errors import BUSY_RETRY_AFTER, ServiceUnavailable

router = APIRouter(prefix="/api/v1/health", tags=["Health"])
log = logging.getLogger("reviewpoint.health")
# The ping talks to the driver directly, so its errors come unwrapped too.
DATABASE_ERRORS = (
    SQLAlchemyError,
    OSError,
    TimeoutError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class HealthStatus(BaseModel):
    status: Literal["ok"] = "ok"


@router.get("")
async def live() -> HealthStatus:
    """The process answers; says nothing about the database."""
    return HealthStatus()


@router.get("/ready", responses={503: {"description": "Database unreachable"}})
async def ready(database: DatabaseDep) -> HealthStatus:
    """The request pool answers: the one exports can never exhaust."""
    try:
        await database.ping()
    except DATABASE_ERRORS as error:
        # Only the database's failures: a bug here should be a 500, not "not ready".
        log.warning("not ready: %r", error)
        raise ServiceUnavailable("Database unreachable", retry_after=BUSY_RETRY_AFTER) from None
    return HealthStatus()
