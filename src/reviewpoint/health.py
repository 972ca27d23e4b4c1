"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Literal

import asyncpg
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from reviewpoint.db import Database, DatabaseDep
from reviewpoint.errors import BUSY_RETRY_AFTER, ServiceUnavailable

router = APIRouter(prefix="/api/v1/health", tags=["Health"])
log = logging.getLogger("reviewpoint.health")
# A healthy database answers the ping in milliseconds. One that does not answer
# at all (a partition, a frozen host) is reported down after this, plus the 2 s
# SQLAlchemy gives the abandoned connection to close: about 5 s, where without
# a bound each probe would hang and hold a request connection for good.
PROBE_SECONDS = 3.0
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


@router.get(
    "/ready",
    responses={
        503: {
            "description": "The database, or the export replica when "
            "`REVIEWPOINT_EXPORT_DB_URL` is set, is unreachable; the detail names which"
        }
    },
)
async def ready(database: DatabaseDep) -> HealthStatus:
    """The request pool answers (the one exports can never exhaust) and so does the
    export replica, if one is configured."""
    checks = [("database", False)]
    if database.replica_probe is not None:
        checks.append(("export replica", True))
    down = [name for name, replica in checks if not await _answers(database, replica=replica)]
    if down:
        raise ServiceUnavailable(
            f"{' and '.join(down)} unreachable".capitalize(), retry_after=BUSY_RETRY_AFTER
        )
    return HealthStatus()


async def _answers(database: Database, *, replica: bool) -> bool:
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await database.ping(replica=replica)
    except DATABASE_ERRORS as error:
        # Only the database's failures: a bug here should be a 500, not "not ready".
        log.warning("not ready: %s %r", "export replica" if replica else "database", error)
        return False
    return True
