"""How the CLI talks: one console for notes, one for results, and one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from reviewpoint.config import Settings, SettingsError, load_settings
from reviewpoint.errors import AppError, is_database_unavailable
from reviewpoint.inputs import INT32_MAX

# No markup: names, emails and URLs are printed as written, `[...]` included (rich's
# escape() is not enough: it doubles a trailing backslash). Style goes through Text.
# Notes are never wrapped by rich: a line stays one line for grep and for the terminal.
err = Console(stderr=True, markup=False, soft_wrap=True)
out = Console(markup=False)
T = TypeVar("T")
SQLITE_THREAD_GRACE_SECONDS = 1.0
# `--json` of every list command.
JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json", help="Print a JSON array: the HTTP API's objects, ISO 8601 times with Z."
    ),
]
# A row id, bounded as the HTTP API bounds it: a larger one overflows PostgreSQL's integer.
RowIdArgument = Annotated[int, typer.Argument(metavar="ID", min=1, max=INT32_MAX)]


def fail(message: str, code: int = 1) -> typer.Exit:
    # One line whatever the terminal width: rich would wrap it at 80 columns.
    message = " ".join(message.splitlines())
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    return typer.Exit(code)


class OneLineTyper(typer.Typer):
    """Typer whose usage errors (a bad option value...) end in one line too, not a panel.

    Help is click's plain text: Typer's rich panels print a type beside every
    option, `<bool>` beside each flag (`--json <bool>` reads as if it took a value).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"rich_markup_mode": None, **kwargs})

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        threading.excepthook = _quiet_when_the_loop_is_gone
        # Without standalone mode click raises its errors instead of printing them.
        try:
            code = super().__call__(*args, **{**kwargs, "standalone_mode": False})
        except typer.Abort:
            code = fail("aborted").exit_code
        except typer.TyperException as error:  # click's ClickException, as Typer names it
            # With no arguments a group has already printed its help: nothing to add.
            if type(error).__name__ != "NoArgsIsHelpError":
                fail(error.format_message())
            code = error.exit_code
        # As standalone mode does: `return` from a command is success, Exit(n) returns n.
        sys.exit(code if isinstance(code, int) else 0)


def _quiet_when_the_loop_is_gone(args: threading.ExceptHookArgs) -> None:
    """Drop aiosqlite's late report on a connection that failed to open.

    Its worker thread announces the closing of that connection to the event
    loop, which `asyncio.run` may have closed by then, as the command ended with
    its one-line error: the thread's traceback would follow that line. Nothing
    is lost; every other thread error is printed as usual.
    """
    if isinstance(args.exc_value, RuntimeError) and str(args.exc_value) == "Event loop is closed":
        return
    threading.__excepthook__(args)


def one_line_errors(command: Callable[..., T]) -> Callable[..., T]:
    """Every failure an operator can cause ends as one line on stderr and a non-zero exit."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except SettingsError as error:
            raise fail(str(error), code=2) from None
        except AppError as error:
            raise fail(error.detail) from None
        except BrokenPipeError:
            # The reader left (`... | head`): nothing more to say, and Python would
            # complain about the unflushed rest at exit. 141 is what a shell reports
            # for a command killed by SIGPIPE.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except OSError as error:
            # A file the command reads or writes names itself; a socket error is the database.
            raise fail(str(error) if error.filename else database_problem(error)) from None
        except DBAPIError as error:
            raise fail(database_problem(error)) from None

    return run


# What a database says when a table or column it is asked for does not exist:
# SQLite's messages (its result code is the generic SQLITE_ERROR) and
# PostgreSQL's SQLSTATEs undefined_table and undefined_column.
_SQLITE_MISSING = ("no such table", "no such column")
_POSTGRES_MISSING = frozenset({"42P01", "42703"})


def database_problem(error: DBAPIError | OSError) -> str:
    """One line saying what is wrong with the database, and what to do about it."""
    orig = getattr(error, "orig", None) or error
    reason = (str(orig).splitlines() or [type(orig).__name__])[0]
    if reason.startswith(_SQLITE_MISSING) or getattr(orig, "sqlstate", None) in _POSTGRES_MISSING:
        return (
            f"the database has no reviewpoint schema, or an older one ({reason}); "
            "run `reviewpoint db upgrade`"
        )
    if is_database_unavailable(error):
        return f"cannot reach the database {_configured_database()}: {reason}{_if_never_made()}"
    return f"database error: {reason}"


def _if_never_made() -> str:
    """What to do when the SQLite file is missing from a folder that exists: the
    server's engines never create it (db.existing_sqlite_file), migrations do."""
    try:
        url = make_url(load_settings().db_url)
    except SettingsError:
        return ""
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path in (None, "", ":memory:"):
        return ""
    file = Path(str(path))
    if file.parent.is_dir() and not file.exists():
        return "; the file does not exist yet: run `reviewpoint db upgrade` to create it"
    return ""


def _configured_database() -> str:
    try:
        return without_password(load_settings().db_url)
    except SettingsError:
        return "(REVIEWPOINT_DB_URL)"


def current_settings() -> Settings:
    return load_settings()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(_settled(coroutine))


async def _settled(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return await coroutine
    finally:
        # aiosqlite stops the thread of a connection that failed to open (a
        # database in a missing directory) without waiting for it; answering on
        # the loop asyncio.run has closed, the thread then prints a traceback
        # (omnilib/aiosqlite#241). Let such threads end while the loop still runs.
        for thread in threading.enumerate():
            if thread.name.endswith("(_connection_worker_thread)"):
                await asyncio.to_thread(thread.join, SQLITE_THREAD_GRACE_SECONDS)


def validated(model: type[T], **values: Any) -> T:
    """Validate CLI input with the API's own schema; report it in one line."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise fail(f"invalid input: {problems}") from None


def without_password(db_url: str) -> str:
    """The database URL to print: terminals and logs are no place for its password."""
    return make_url(db_url).render_as_string(hide_password=True)


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def column(header: str, *, min_width: int | None = None, no_wrap: bool = False) -> Column:
    """A table column that wraps, and folds a long word, rather than cut it short with "…"."""
    return Column(header, min_width=min_width, no_wrap=no_wrap, overflow="fold")


# A timestamp column: the date stays on one line, the time wraps below it.
TIMESTAMP_WIDTH = 10


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> None:
    """Rows under a header rule, without borders, so that the lists fit 80 columns.

    On a terminal, or with $COLUMNS set, cells wrap to its width. Piped without
    $COLUMNS, rich would assume 80 columns; there each row stays on one line, for grep.
    """
    table = Table(
        *columns, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0)
    )
    for row in rows:
        table.add_row(*map(Text, row))
    wide = not out.is_terminal and not os.environ.get("COLUMNS")
    (Console(width=10_000, markup=False) if wide else out).print(table)


def print_json(items: Iterable[BaseModel]) -> None:
    """`--json`: an array on stdout, shaped as the HTTP API shapes it (ISO 8601 `Z` times)."""
    print(
        json.dumps([item.model_dump(mode="json") for item in items], indent=2, ensure_ascii=False)
    )
