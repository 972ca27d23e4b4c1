"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from reviewpoint.db import Engine
from reviewpoint.errors import ServiceUnavailable

router = APIRouter(prefix="/api/v1/health", tags=["Health"])


class HealthStatus(BaseModel):
    status: Literal["ok"] = "ok"


@router.get("")
async def live() -> HealthStatus:
    """The process answers; says nothing about the database."""
    return HealthStatus()


@router.get("/ready", responses={503: {"description": "Database unreachable"}})
async def ready(engine: Engine) -> HealthStatus:
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(read_only=True)
            await connection.execute(text("SELECT 1"))
    except Exception:
        raise ServiceUnavailable("Database unreachable") from None
    return HealthStatus()
