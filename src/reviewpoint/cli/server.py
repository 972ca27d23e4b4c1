"""`reviewpoint serve`."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn

from reviewpoint.cli.console import (
    current_settings,
    err,
    one_line_errors,
)
from reviewpoint.cli.db import require_schema
from reviewpoint.config import signing_secret


@one_line_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (run `reviewpoint db upgrade` first: it refuses a database
    that was never migrated, or is behind this release)."""
    settings = current_settings()  # fail fast, in one line, before uvicorn starts workers
    # Refused unless set, or env is dev or test.
    secret = signing_secret(settings)
    require_schema(settings.db_url)
    if settings.jwt_secret_key is None:
        # Workers are separate processes that build their own app: they all read
        # this one key from the environment.
        os.environ["REVIEWPOINT_JWT_SECRET_KEY"] = secret
        err.print(
            "note: no REVIEWPOINT_JWT_SECRET_KEY: tokens are signed with a random key "
            "and stop working when this server stops",
            soft_wrap=True,
        )
    uvicorn.run(
        "reviewpoint.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
    )
