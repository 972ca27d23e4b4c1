"""`reviewpoint audit ...`: the export audit trail."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from reviewpoint.audit import service as audit
from reviewpoint.audit.schemas import (
    ACTOR_FORMAT,
    ActorRef,
    ExportAuditPublic,
    parse_instant,
)
from reviewpoint.cli.console import current_settings, err, one_line_errors, out, run, when
from reviewpoint.db import standalone_session
from reviewpoint.exports.attempt import Outcome

app = typer.Typer(
    help="Export audit trail: who exported what, when, how it ended.", no_args_is_help=True
)


def _actor(value: str) -> str:
    try:
        ActorRef.parse(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return value


def _instant(value: str) -> datetime:
    try:
        moment = parse_instant(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    assert isinstance(moment, datetime)
    return moment


@app.command("list")
@one_line_errors
def audit_list(
    outcome: Annotated[Outcome | None, typer.Option(help="Only attempts that ended so.")] = None,
    actor: Annotated[
        str | None, typer.Option(parser=_actor, metavar="ACTOR", help=f"Only {ACTOR_FORMAT}.")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            parser=_instant,
            metavar="TIME",
            help="Only attempts started at or after TIME (ISO 8601 with a zone).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array on stdout, as the HTTP API shows it.")
    ] = False,
) -> None:
    """List export attempts, newest first."""

    async def page() -> tuple[list[ExportAuditPublic], int]:
        async with standalone_session(current_settings().db_url) as session:
            records, count = await audit.list_page(
                session, actor=actor, outcome=outcome, since=since, limit=limit
            )
            return [ExportAuditPublic.of(record) for record in records], count

    records, count = run(page())
    if as_json:
        print(json.dumps([record.model_dump(mode="json") for record in records], indent=2))
    elif records:
        out.print(_table(records))
    err.print(f"{len(records)} of {count} record(s), newest first")


def _table(records: list[ExportAuditPublic]) -> Table:
    """Fits 80 columns; the rest of each record (the fields delivered and their
    anonymization among it) is in `--json`."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for name in ("id", "started (UTC)", "actor", "endpoint", "outcome", "http", "rows"):
        table.add_column(name, no_wrap=True, justify="right" if name in ("id", "rows") else "left")
    for record in records:
        table.add_row(
            str(record.id),
            when(record.started_at).removesuffix("Z"),
            f"{record.actor.kind}:{record.actor.id}" if record.actor else "-",
            record.endpoint,
            record.outcome,
            str(record.status or "-"),
            str(record.rows),
        )
    return table


@app.command("prune")
@one_line_errors
def audit_prune(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            show_default=False,
            help="Remove records of exports started more than this many days ago "
            "(default: REVIEWPOINT_AUDIT_RETENTION_DAYS, 365).",
        ),
    ] = None,
) -> None:
    """Remove old records, and mark exports a stopped server left running as failed."""
    settings = current_settings()
    days = older_than_days or settings.audit_retention_days

    async def prune() -> tuple[int, int]:
        async with standalone_session(settings.db_url) as session:
            removed = await audit.prune(session, older_than_days=days)
            interrupted = await audit.fail_interrupted(session, settings=settings)
            return removed, interrupted

    removed, interrupted = run(prune())
    err.print(f"removed {removed} audit record(s) older than {days} day(s)")
    if interrupted:
        err.print(f"marked {interrupted} interrupted export(s) as failed")
