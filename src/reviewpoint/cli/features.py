"""`reviewpoint features ...`: runtime feature flags, through the services the HTTP API uses.

Defaults come from this command's own environment (`REVIEWPOINT_FEATURE*`,
`.env`): run it with the servers' settings, or the defaults it lists and
records may differ from what the servers fall back to.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint.cli.console import current_settings, err, one_line_errors, out, run, when
from reviewpoint.config import Settings
from reviewpoint.db import standalone_session
from reviewpoint.features import service
from reviewpoint.features.catalog import FEATURES, known
from reviewpoint.features.schemas import FeaturePublic
from reviewpoint.features.service import ChangedBy, FlagState

app = typer.Typer(
    help="Feature flags: an override in the database beats the environment default.",
    no_args_is_help=True,
)
FeatureArgument = Annotated[
    str, typer.Argument(metavar="NAME", help=f"One of {', '.join(FEATURES)}.")
]


@app.command("list")
@one_line_errors
def features_list(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, as the HTTP API does.")
    ] = False,
) -> None:
    """List every flag: on or off, where that comes from, who changed it when."""
    settings = current_settings()

    async def states() -> list[FlagState]:
        async with standalone_session(settings.db_url) as session:
            return await service.list_states(session, settings=settings)

    flags = [FeaturePublic.model_validate(state) for state in run(states())]
    if as_json:
        print(json.dumps([flag.model_dump(mode="json") for flag in flags], indent=2))
        return
    # Names are never cut short; a long email folds onto more lines instead.
    table = Table(
        Column("name", no_wrap=True),
        "enabled",
        "source",
        Column("changed by", overflow="fold"),
        Column("changed at", no_wrap=True),
        box=None,
    )
    for flag in flags:
        table.add_row(
            *map(
                Text,
                [
                    flag.name,
                    "on" if flag.enabled else "off",
                    flag.source,
                    flag.changed_by or "-",
                    when(flag.changed_at),
                ],
            )
        )
    # Piped, rich assumes 80 columns and folds values; print them whole.
    (out if out.is_terminal else Console(width=10_000)).print(table)


@app.command("enable")
@one_line_errors
def features_enable(name: FeatureArgument) -> None:
    """Switch NAME on, whatever the environment says."""
    _override(name, enabled=True)


@app.command("disable")
@one_line_errors
def features_disable(name: FeatureArgument) -> None:
    """Switch NAME off (403), whatever the environment says."""
    _override(name, enabled=False)


@app.command("reset")
@one_line_errors
def features_reset(name: FeatureArgument) -> None:
    """Drop the override of NAME: its environment default applies again."""
    _change(
        name,
        lambda session, settings: service.reset(
            session, settings=settings, name=name, by=ChangedBy.cli()
        ),
    )


def _override(name: str, *, enabled: bool) -> None:
    _change(
        name,
        lambda session, settings: service.set_override(
            session, settings=settings, name=name, enabled=enabled, by=ChangedBy.cli()
        ),
    )


def _change(name: str, write: Callable[[AsyncSession, Settings], Awaitable[FlagState]]) -> None:
    known(name)  # before any database work: an unknown name is the operator's typo
    settings = current_settings()

    async def change() -> FlagState:
        async with standalone_session(settings.db_url) as session:
            return await write(session, settings)

    state = run(change())
    err.print(
        f"{state.name} is {'on' if state.enabled else 'off'} ({state.source}); "
        f"every worker serves it within {settings.feature_refresh_seconds:g} s",
        highlight=False,
        soft_wrap=True,
    )
