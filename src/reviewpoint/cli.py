"""The `reviewpoint` command: each subcommand is a thin call into the same services."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import uvicorn
from rich.console import Console
from rich.progress import Progress
from rich.table import Column, Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from reviewpoint.api_keys import service as api_keys
from reviewpoint.api_keys.schemas import SCOPES, ApiKeyCreate, Scope
from reviewpoint.config import Settings, SettingsError, load_settings
from reviewpoint.db import create_engine, standalone_session
from reviewpoint.errors import AppError
from reviewpoint.migrations import upgrade
from reviewpoint.users import repository as users_repository
from reviewpoint.users import service as users
from reviewpoint.users.schemas import UserCreate, UserUpdate
from reviewpoint.users.seed import seed_users

# No markup: names, emails and URLs are printed as written, `[...]` included (rich's
# escape() is not enough: it doubles a trailing backslash). Style goes through Text.
err = Console(stderr=True, markup=False)
out = Console(markup=False)
T = TypeVar("T")


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


app = OneLineTyper(help="ReViewPoint user export service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Export API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="api-keys")


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


def _settings() -> Settings:
    return load_settings()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@app.command()
@one_line_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (run `reviewpoint db upgrade` first)."""
    settings = _settings()  # fail fast, in one line, before uvicorn starts workers
    uvicorn.run(
        "reviewpoint.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
    )


@db_app.command("upgrade")
@one_line_errors
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = _settings()
    upgrade(settings.db_url, revision)
    err.print(f"database at revision {revision}")


@users_app.command("create")
@one_line_errors
def users_create(
    email: Annotated[str, typer.Option(help="Login email, unique.")],
    password: Annotated[str, typer.Option(help="At least 8 characters.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Grant administrator rights.")] = False,
) -> None:
    """Create a user."""
    data = _validated(UserCreate, email=email, password=password, name=name, is_admin=admin)

    async def create() -> int:
        async with standalone_session(_settings().db_url) as session:
            return (await users.create(session, data=data)).id

    user_id = _run(create())
    err.print(f"created user {user_id} <{email}>{' (admin)' if admin else ''}")


@keys_app.command("create")
@one_line_errors
def api_keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[list[str], typer.Option(help=f"Repeatable; one of {', '.join(SCOPES)}.")],
    expires_in_days: Annotated[int | None, typer.Option(help="Lifetime in days.")] = None,
) -> None:
    """Issue an export API key; prints the secret alone on stdout (shown only once)."""
    unknown = [s for s in scope if s not in SCOPES]
    if unknown:
        raise fail(f"unknown scope {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
    scopes: list[Scope] = [s for s in SCOPES if s in scope]
    # The HTTP API's own schema, so both refuse the same names and lifetimes.
    data = _validated(ApiKeyCreate, name=name, scopes=scopes, expires_in_days=expires_in_days)

    async def create() -> tuple[int, str]:
        async with standalone_session(_settings().db_url) as session:
            key, secret = await api_keys.create(
                session, name=data.name, scopes=data.scopes, expires_in_days=data.expires_in_days
            )
            return key.id, secret

    key_id, secret = _run(create())
    err.print(
        f"created API key {key_id} '{data.name}' with scopes {' '.join(data.scopes)};"
        " store it now:",
        highlight=False,
        soft_wrap=True,
    )
    print(secret)


@keys_app.command("list")
@one_line_errors
def api_keys_list() -> None:
    """List API keys (never their secrets)."""

    async def rows() -> list[list[str]]:
        async with standalone_session(_settings().db_url) as session:
            return [
                [
                    str(key.id),
                    key.name,
                    key.prefix,
                    key.scopes,
                    _when(key.created_at),
                    _when(key.last_used_at),
                    _when(key.expires_at),
                    _when(key.revoked_at),
                ]
                for key in await api_keys.list_all(session)
            ]

    # The prefix identifies the key: never cut it short with "…", as rich does to
    # columns of a table wider than the terminal.
    prefix = Column("prefix", no_wrap=True, min_width=12)
    table = Table("id", "name", prefix, "scopes", "created", "last used", "expires", "revoked")
    for row in _run(rows()):
        table.add_row(*map(Text, row))
    # Piped, rich assumes 80 columns and cuts values short; print them whole.
    (out if out.is_terminal else Console(width=10_000)).print(table)


@keys_app.command("revoke")
@one_line_errors
def api_keys_revoke(key_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Revoke an API key at once; requests using it get 401."""

    async def revoke() -> None:
        async with standalone_session(_settings().db_url) as session:
            await api_keys.revoke(session, key_id=key_id)

    _run(revoke())
    err.print(f"revoked API key {key_id}")


@app.command()
@one_line_errors
def seed(users_count: Annotated[int, typer.Option("--users", min=1, help="How many.")]) -> None:
    """Add N synthetic users (for demos and benchmarks)."""

    async def run() -> int:
        engine = create_engine(_settings().db_url)
        try:
            with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
                task = progress.add_task("seeding users", total=users_count)
                return await seed_users(
                    engine, users_count, progress=lambda n: progress.advance(task, n)
                )
        finally:
            await engine.dispose()

    added = _run(run())
    err.print(f"added {added} users")


DEMO_ADMIN_EMAIL = "admin@example.com"
DEMO_USERS = [
    ("john.doe@example.com", "John Doe"),
    ("jane.smith@example.com", "Jane Smith"),
    ("quote@example.com", 'Ann "Nancy" O\'Neil'),
    ("comma@example.com", "Doe, John"),
    ("multi.line@example.com", "First line\nSecond line"),
    ("zoe@example.com", "Zoë Ærøskøbing 🚀"),
    ("arabic@example.com", "مستخدم تجريبي"),
    ("formula@example.com", '=HYPERLINK("http://example.com","click")'),
    ("minus@example.com", "-2+3"),
    ("noname@example.com", None),
]


@app.command()
@one_line_errors
def demo(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Migrate, add demo users, an admin and an export key, print how to use them, serve."""
    settings = _settings()
    upgrade(settings.db_url)
    password = secrets.token_urlsafe(12)

    async def prepare() -> str:
        async with standalone_session(settings.db_url) as session:
            admin = await users_repository.get_live_by_email(session, email=DEMO_ADMIN_EMAIL)
            if admin is None:
                admin_data = UserCreate(
                    email=DEMO_ADMIN_EMAIL, password=password, name="Demo Admin", is_admin=True
                )
                admin = await users.create(session, data=admin_data)
            else:  # a new password each run: the old one was only ever printed
                await users.update(session, user_id=admin.id, data=UserUpdate(password=password))
            for email, name in DEMO_USERS:
                if await users_repository.get_live_by_email(session, email=email) is None:
                    user = UserCreate(email=email, password=secrets.token_urlsafe(16), name=name)
                    await users.create(session, data=user)
            _, secret = await api_keys.create(
                session, name="demo", scopes=["users:export_full"], created_by=admin.id
            )
            return secret

    key = _run(prepare())
    base = f"http://{host}:{port}"
    out.print(
        Text.assemble(
            "\n",
            ("ReViewPoint demo", "bold"),
            f" on {base}  (database: {_without_password(settings.db_url)})\n"
            f"  admin login:     {DEMO_ADMIN_EMAIL} / {password}\n"
            f"  export API key:  {key}\n"
            f"  API docs:        {base}/docs\n\n"
            "Download every user:\n"
            f'  curl -H "X-API-Key: {key}" {base}/api/v1/users/export-full\n',
        ),
        soft_wrap=True,
    )
    sys.stdout.flush()
    uvicorn.run(
        "reviewpoint.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=settings.log_level,
    )


def _validated(model: type[T], **values: Any) -> T:
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


def _without_password(db_url: str) -> str:
    """The database URL to print: terminals and logs are no place for its password."""
    return make_url(db_url).render_as_string(hide_password=True)


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"
