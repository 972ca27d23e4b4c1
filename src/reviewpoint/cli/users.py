"""`reviewpoint users ...` and `reviewpoint seed`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.progress import Progress

from reviewpoint.cli.console import (
    current_settings,
    err,
    fail,
    one_line_errors,
    run,
    validated,
)
from reviewpoint.db import create_engine, standalone_session
from reviewpoint.users import service as users
from reviewpoint.users.schemas import UserCreate
from reviewpoint.users.seed import seed_users

app = typer.Typer(help="User accounts.", no_args_is_help=True)


@app.command("create")
@one_line_errors
def users_create(
    email: Annotated[str, typer.Option(help="Login email, unique.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Grant administrator rights.")] = False,
    password: Annotated[
        str | None,
        typer.Option(
            help="At least 8 characters. For scripts only: a password on the command line "
            "is kept in shell history and visible to other local users in the process "
            "list; prefer the prompt or --password-stdin."
        ),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from standard input (one line)."),
    ] = False,
) -> None:
    """Create a user; asks for the password (hidden, twice) unless it is given."""
    password = _password(password, from_stdin=password_stdin)
    data = validated(UserCreate, email=email, password=password, name=name, is_admin=admin)

    async def create() -> int:
        async with standalone_session(current_settings().db_url) as session:
            return (await users.create(session, data=data)).id

    user_id = run(create())
    err.print(f"created user {user_id} <{email}>{' (admin)' if admin else ''}")


def _password(given: str | None, *, from_stdin: bool) -> str:
    if given is not None and from_stdin:
        raise fail("give either --password or --password-stdin, not both")
    if given is not None:
        return given
    if from_stdin:
        # As `docker login --password-stdin`: the input minus its final line break.
        return sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        # getpass would fall back to reading a pipe with echo warnings: say what works.
        raise fail(
            "no password: standard input is not a terminal to ask on; "
            "pipe it with --password-stdin (or give --password)"
        )
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return value


@one_line_errors
def seed(users_count: Annotated[int, typer.Option("--users", min=1, help="How many.")]) -> None:
    """Add N synthetic users (for demos and benchmarks)."""

    async def seed_all() -> int:
        engine = create_engine(current_settings().db_url)
        try:
            with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
                task = progress.add_task("seeding users", total=users_count)
                return await seed_users(
                    engine, users_count, progress=lambda n: progress.advance(task, n)
                )
        finally:
            await engine.dispose()

    added = run(seed_all())
    err.print(f"added {added} users")
