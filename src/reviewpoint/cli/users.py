"""`reviewpoint users ...` and `reviewpoint seed`: through the users service the API uses."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.progress import Progress

from reviewpoint.cli.console import (
    TIMESTAMP_WIDTH,
    JsonFlag,
    RowIdArgument,
    column,
    current_settings,
    err,
    fail,
    one_line_errors,
    print_json,
    print_table,
    run,
    validated,
    when,
)
from reviewpoint.db import create_engine, standalone_session
from reviewpoint.inputs import INT32_MAX
from reviewpoint.users import service as users
from reviewpoint.users.schemas import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    UserCreate,
    UserPublic,
    UserUpdate,
)
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


@app.command("list")
@one_line_errors
def users_list(
    as_json: JsonFlag = False,
    email: Annotated[
        str | None, typer.Option(help="Only this address (ASCII case ignored, as at login).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_PAGE_SIZE, help="Users at most.")
    ] = PAGE_SIZE,
    offset: Annotated[int, typer.Option(min=0, max=INT32_MAX, help="Users to skip.")] = 0,
) -> None:
    """List live users by id (deleted ones are not shown); the total goes to stderr."""

    async def page() -> tuple[list[UserPublic], int]:
        async with standalone_session(current_settings().db_url) as session:
            found, count = await users.list_page(session, offset=offset, limit=limit, email=email)
            return [UserPublic.model_validate(user) for user in found], count

    listed, count = run(page())
    if as_json:
        print_json(listed)
    else:
        print_table(
            [
                column("id"),
                column("email"),
                column("name"),
                column("active"),
                column("admin"),
                column("created", min_width=TIMESTAMP_WIDTH),
                column("last login", min_width=TIMESTAMP_WIDTH),
            ],
            (
                [
                    str(user.id),
                    user.email,
                    user.name or "",
                    _yes(user.is_active),
                    _yes(user.is_admin),
                    when(user.created_at),
                    when(user.last_login_at),
                ]
                for user in listed
            ),
        )
    shown = f"{offset + 1}-{offset + len(listed)}" if listed else "none"
    err.print(f"users {shown} of {count}", highlight=False)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


@app.command("deactivate")
@one_line_errors
def users_deactivate(user_id: RowIdArgument) -> None:
    """Stop a user from logging in; their tokens stop working at once. The last active
    administrator cannot be deactivated."""

    async def deactivate() -> tuple[str, bool]:
        async with standalone_session(current_settings().db_url) as session:
            user = await users.get(session, user_id=user_id)
            if not user.is_active:
                return user.email, False
            await users.update(session, user_id=user_id, data=UserUpdate(is_active=False))
            return user.email, True

    email, changed = run(deactivate())
    if changed:
        err.print(f"deactivated user {user_id} <{email}>", highlight=False)
    else:
        err.print(f"user {user_id} <{email}> was already inactive", highlight=False)


@app.command("delete")
@one_line_errors
def users_delete(user_id: RowIdArgument) -> None:
    """Delete a user: gone from logins, listings and exports (the row is kept for
    audits). The last active administrator cannot be deleted."""

    async def delete() -> str:
        async with standalone_session(current_settings().db_url) as session:
            email = (await users.get(session, user_id=user_id)).email
            await users.soft_delete(session, user_id=user_id)
            return email

    email = run(delete())
    err.print(f"deleted user {user_id} <{email}>", highlight=False)


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
