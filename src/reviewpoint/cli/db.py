"""`reviewpoint db ...`: the schema."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from reviewpoint.cli.console import (
    JsonFlag,
    column,
    current_settings,
    database_problem,
    err,
    fail,
    one_line_errors,
    print_json,
    print_table,
)
from reviewpoint.errors import is_database_unavailable
from reviewpoint.migrations import Revision, current_revision, revisions, upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)
NOT_MIGRATED = "the database has no reviewpoint schema yet: run `reviewpoint db upgrade`"


class RevisionView(BaseModel):
    """One migration as `db history --json` lists it."""

    revision: str
    down_revision: str | None
    message: str
    head: bool
    current: bool


@app.command("upgrade")
@one_line_errors
def db_upgrade(
    revision: Annotated[
        str, typer.Argument(metavar="REVISION", help="A revision of `db history`, or head.")
    ] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the latest). Never downgrades."""
    db_url = current_settings().db_url
    shipped = [known.revision for known in revisions()]
    target = shipped[-1] if revision == "head" else revision
    if target not in shipped:
        raise fail(f"unknown revision '{revision}'; known: {', '.join(shipped)} (or head)")
    before = _known_current(db_url, shipped)
    if before is not None and shipped.index(before) > shipped.index(target):
        # Alembic's upgrade to an older revision does nothing: say so rather than
        # print a revision the database is not at.
        raise fail(
            f"the database is at revision {before}, which is newer than {target}; "
            "reviewpoint does not downgrade"
        )
    if before == target:
        err.print(f"database already at revision {_label(target, shipped)}; nothing to do")
        return
    upgrade(db_url, target)
    after = current_revision(db_url)
    err.print(
        f"database upgraded from {before or 'no schema'} to revision {_label(after, shipped)}"
    )


@app.command("current")
@one_line_errors
def db_current() -> None:
    """Print the database's revision on stdout ("none" before the first upgrade)."""
    db_url = current_settings().db_url
    shipped = [known.revision for known in revisions()]
    current = current_revision(db_url)
    print(current or "none")
    if current is None:
        err.print(f"note: {NOT_MIGRATED}")
    elif current not in shipped:
        err.print(f"note: {_unknown(current)}")
    elif current != shipped[-1]:
        err.print(f"note: the latest revision is {shipped[-1]}: run `reviewpoint db upgrade`")
    else:
        err.print("note: the latest revision (head)")


@app.command("history")
@one_line_errors
def db_history(
    as_json: JsonFlag = False,
) -> None:
    """List the migrations this release ships, oldest first, marking the database's."""
    shipped = revisions()
    current = current_revision(current_settings().db_url)
    views = [_view(known, shipped, current) for known in shipped]
    if as_json:
        print_json(views)
    else:
        print_table(
            [column("revision", no_wrap=True), column("message")],
            ([_marked(view), view.message] for view in views),
        )
    if current is None:
        err.print(f"note: {NOT_MIGRATED}")
    elif current not in [known.revision for known in shipped]:
        err.print(f"note: {_unknown(current)}")


def require_schema(db_url: str) -> None:
    """Refuse to serve a database this release cannot use: never migrated, or behind.

    A database a newer release migrated is served (a rolling upgrade migrates
    first), and so is one that cannot be reached now: readiness reports it, and
    the server starts serving once it answers.
    """
    shipped = [known.revision for known in revisions()]
    try:
        current = current_revision(db_url)
    except (DBAPIError, OSError) as error:
        if not is_database_unavailable(error):
            raise
        err.print(f"note: {database_problem(error)}; serving anyway", highlight=False)
        return
    if current is None:
        raise fail(NOT_MIGRATED)
    if current in shipped and current != shipped[-1]:
        raise fail(
            f"the database is at revision {current}, older than this release's "
            f"{shipped[-1]}: run `reviewpoint db upgrade`"
        )


def _view(known: Revision, shipped: list[Revision], current: str | None) -> RevisionView:
    return RevisionView(
        revision=known.revision,
        down_revision=known.down_revision,
        message=known.message,
        head=known is shipped[-1],
        current=known.revision == current,
    )


def _marked(view: RevisionView) -> str:
    marks = [mark for mark, holds in (("head", view.head), ("current", view.current)) if holds]
    return f"{view.revision} ({', '.join(marks)})" if marks else view.revision


def _known_current(db_url: str, shipped: list[str]) -> str | None:
    current = current_revision(db_url)
    if current is not None and current not in shipped:
        raise fail(_unknown(current))
    return current


def _unknown(current: str) -> str:
    return (
        f"the database is at revision {current}, which this reviewpoint does not know "
        "(a newer release migrated it): run that release, or a newer one"
    )


def _label(revision: str | None, shipped: list[str]) -> str:
    if revision is None:
        return "none"
    return f"{revision} (head)" if revision == shipped[-1] else revision
