"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from reviewpoint.db import DatabaseDep
from reviewpoint.errors import ServiceUnavailable

router = APIRouter(prefix="/api/v1/health", tags=["Health"])
log = logging.getLogger("reviewpoint.health")


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
        async with database.engine.connect() as connection:
            connection = await connection.execution_options(read_only=True)
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        # Only the database's failures: a bug here should be a 500, not "not ready".
        log.warning("not ready: %r", error)
        raise ServiceUnavailable("Database unreachable") from None
    return HealthStatus()
