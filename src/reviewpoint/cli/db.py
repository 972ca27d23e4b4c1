"""`reviewpoint db ...`: the schema."""

from __future__ import annotations

from typing import Annotated

import typer

from reviewpoint.cli.console import (
    current_settings,
    err,
    one_line_errors,
)
from reviewpoint.migrations import upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
@one_line_errors
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = current_settings()
    upgrade(settings.db_url, revision)
    err.print(f"database at revision {revision}")
