"""`reviewpoint serve`."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer
import uvicorn

from reviewpoint.cli.console import (
    current_settings,
    one_line_errors,
)
from reviewpoint.cli.db import require_schema
from reviewpoint.config import signing_secret
from reviewpoint.exports.anonymize import anonymize_secret
from reviewpoint.logs import configure_logging, uvicorn_log_config
from reviewpoint.metrics.multiprocess import worker_metrics_directory

log = logging.getLogger("reviewpoint.cli")


@one_line_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (run `reviewpoint db upgrade` first: it refuses a database
    that was never migrated, or is behind this release)."""
    settings = current_settings()  # fail fast, in one line, before uvicorn starts workers
    configure_logging(settings.log_level, settings.log_format)
    # Refused unless set, or env is dev or test.
    secret = signing_secret(settings)
    pseudonym_secret = anonymize_secret(settings)  # likewise, while anonymized exports are on
    require_schema(settings.db_url)
    if settings.anonymize_key is None and pseudonym_secret is not None:
        # One random key for every worker: a user's pseudonyms must not depend
        # on which worker served the export.
        os.environ["REVIEWPOINT_ANONYMIZE_KEY"] = pseudonym_secret
    if settings.jwt_secret_key is None:
        # Workers are separate processes that build their own app: they all read
        # this one key from the environment.
        os.environ["REVIEWPOINT_JWT_SECRET_KEY"] = secret
        log.warning(
            "no REVIEWPOINT_JWT_SECRET_KEY: tokens are signed with a random key "
            "and stop working when this server stops"
        )
    with worker_metrics_directory(workers=workers, enabled=settings.metrics):
        uvicorn.run(
            "reviewpoint.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            timeout_keep_alive=settings.keep_alive_seconds,
            log_level=settings.log_level,
            log_config=uvicorn_log_config(settings.log_level, settings.log_format),
        )
