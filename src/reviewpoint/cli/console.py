"""How the CLI talks: one console for notes, one for results, and one-line errors."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from reviewpoint.config import Settings, SettingsError, load_settings
from reviewpoint.errors import AppError

# No markup: names, emails and URLs are printed as written, `[...]` included (rich's
# escape() is not enough: it doubles a trailing backslash). Style goes through Text.
err = Console(stderr=True, markup=False)
out = Console(markup=False)
T = TypeVar("T")
SQLITE_THREAD_GRACE_SECONDS = 1.0


def fail(message: str, code: int = 1) -> typer.Exit:
    # One line whatever the terminal width: rich would wrap it at 80 columns.
    message = " ".join(message.splitlines())
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    return typer.Exit(code)


class OneLineTyper(typer.Typer):
    """Typer whose usage errors (a bad option value...) end in one line too, not a panel."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
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
        except (OperationalError, DBAPIError, OSError) as error:
            reason = str(getattr(error, "orig", None) or error).splitlines()[0]
            raise fail(f"database error: {reason}") from None

    return run


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


def when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"
