"""The `reviewpoint` command: each subcommand is a thin call into the same services."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import uvicorn
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Column, Table
from rich.text import Text
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint import security
from reviewpoint.api_keys import service as api_keys
from reviewpoint.api_keys.models import ApiKey
from reviewpoint.api_keys.schemas import SCOPES, ApiKeyCreate, Scope
from reviewpoint.config import Settings, SettingsError, load_settings, signing_secret
from reviewpoint.db import create_engine, standalone_session, utcnow
from reviewpoint.errors import AppError
from reviewpoint.main import create_app
from reviewpoint.migrations import upgrade
from reviewpoint.users import repository as users_repository
from reviewpoint.users import service as users
from reviewpoint.users.models import User
from reviewpoint.users.schemas import UserCreate
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
    if settings.jwt_secret_key is None:
        # Refused unless env is dev or test. Workers are separate processes that
        # build their own app: they all read this one key from the environment.
        os.environ["REVIEWPOINT_JWT_SECRET_KEY"] = signing_secret(settings)
        err.print(
            "note: no REVIEWPOINT_JWT_SECRET_KEY: tokens are signed with a random key "
            "and stop working when this server stops",
            soft_wrap=True,
        )
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
    data = _validated(UserCreate, email=email, password=password, name=name, is_admin=admin)

    async def create() -> int:
        async with standalone_session(_settings().db_url) as session:
            return (await users.create(session, data=data)).id

    user_id = _run(create())
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


DEMO_STATE = Path(".reviewpoint") / "demo.json"


@app.command()
@one_line_errors
def demo(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Migrate, add demo users, an admin and an export key, print how to use them, serve.

    Safe to repeat: credentials are kept in .reviewpoint/demo.json and reprinted.
    Refuses in prod, on a busy port, and on a database with users of its own.
    """
    settings = _settings()
    if settings.env == "prod":
        raise fail("the demo never runs with REVIEWPOINT_ENV=prod: it adds a known admin")
    # Held from here on: a second demo on the same port stops before touching anything.
    with _listening_socket(host, port) as sock:
        state = _read_demo_state()
        database = _without_password(settings.db_url)
        stored: dict[str, str] = state.get("databases", {}).get(database, {})
        admin_hash = _run(_demo_admin_hash(settings.db_url))
        if admin_hash is not None and "admin_password" not in stored:
            raise fail(
                f"{DEMO_ADMIN_EMAIL} exists in {database} but its password is not in "
                f"{DEMO_STATE}: run the demo where it first ran, or on a new database"
            )
        upgrade(settings.db_url)
        password, key = _run(_prepare_demo(settings.db_url, state, database))
        # Given in the environment, or kept next to the credentials so tokens survive
        # a restart; only this process's server uses it (os.environ is left alone).
        jwt_secret = (
            settings.jwt_secret_key.get_secret_value()
            if settings.jwt_secret_key
            else state["jwt_secret"]
        )
        shown = password
        if admin_hash is not None and not security.verify_password(password, admin_hash):
            shown = "(changed since the first demo run)"
        base = f"http://{host}:{port}"
        out.print(
            Text.assemble(
                "\n",
                ("ReViewPoint demo", "bold"),
                f" on {base}  (database: {database})\n"
                f"  admin login:     {DEMO_ADMIN_EMAIL} / {shown}\n"
                f"  export API key:  {key}\n"
                f"  API docs:        {base}/docs\n"
                f"  kept in:         {DEMO_STATE} (reprinted by the next run)\n\n"
                "Download every user:\n"
                f'  curl -H "X-API-Key: {key}" {base}/api/v1/users/export-full\n',
            ),
            soft_wrap=True,
        )
        sys.stdout.flush()
        demo_settings = settings.model_copy(
            update={"env": "dev", "jwt_secret_key": SecretStr(jwt_secret)}
        )
        config = uvicorn.Config(create_app(demo_settings), log_level=settings.log_level)
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        if not server.started:
            raise typer.Exit(3)  # uvicorn's own exit code for a failed start-up


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind and listen at once: a port merely bound could be bound again (SO_REUSEADDR)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise fail(f"cannot listen on {host}:{port}: {error}") from None
    try:
        # Lets a restarted demo reuse its port at once; a port someone listens on
        # still refuses.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise fail(
            f"cannot listen on {host}:{port} ({error.strerror}): is another demo or server "
            "running there? Stop it or choose --port; nothing was changed"
        ) from None
    return sock


def _read_demo_state() -> dict[str, Any]:
    try:
        state = json.loads(DEMO_STATE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        state = {}
    except (OSError, ValueError) as error:
        raise fail(f"cannot read {DEMO_STATE} ({error}); delete it to start over") from None
    if not isinstance(state, dict):
        raise fail(f"cannot read {DEMO_STATE} (not a JSON object); delete it to start over")
    # The key only signs demo tokens; kept so a restart does not log everyone out.
    state.setdefault("jwt_secret", secrets.token_urlsafe(32))
    return state


def _write_demo_state(state: dict[str, Any]) -> None:
    """Owner-only, replaced whole: it holds an admin password and a key."""
    DEMO_STATE.parent.mkdir(mode=0o700, exist_ok=True)
    partial = DEMO_STATE.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(state, file, indent=2)
    os.replace(partial, DEMO_STATE)


async def _demo_admin_hash(db_url: str) -> str | None:
    """The live demo admin's password hash; refuses a database with users of its own."""
    own = [DEMO_ADMIN_EMAIL, *(email for email, _ in DEMO_USERS)]
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            if not await connection.run_sync(lambda c: inspect(c).has_table("users")):
                return None
            # Deleted users count too: their rows are someone's data.
            foreign = await connection.scalar(
                select(func.count()).select_from(User).where(func.lower(User.email).not_in(own))
            )
            if foreign:
                raise fail(
                    f"{_without_password(db_url)} holds {foreign} user(s) the demo did not "
                    "create: the demo only runs on its own database (set REVIEWPOINT_DB_URL "
                    "to a new one); nothing was changed"
                )
            hashed: str | None = await connection.scalar(
                select(User.hashed_password).where(
                    func.lower(User.email) == DEMO_ADMIN_EMAIL, User.is_deleted.is_(False)
                )
            )
            return hashed
    finally:
        await engine.dispose()


async def _prepare_demo(db_url: str, state: dict[str, Any], database: str) -> tuple[str, str]:
    """Create what is missing; reuse the stored password and key, never reset them."""
    stored = state.setdefault("databases", {}).setdefault(database, {})
    async with standalone_session(db_url) as session:
        admin = await users_repository.get_live_by_email(session, email=DEMO_ADMIN_EMAIL)
        if admin is None:
            stored.setdefault("admin_password", secrets.token_urlsafe(12))
            admin_data = UserCreate(
                email=DEMO_ADMIN_EMAIL,
                password=stored["admin_password"],
                name="Demo Admin",
                is_admin=True,
            )
            admin = await users.create(session, data=admin_data)
        for email, name in DEMO_USERS:
            if await users_repository.get_live_by_email(session, email=email) is None:
                user = UserCreate(email=email, password=secrets.token_urlsafe(16), name=name)
                await users.create(session, data=user)
        if not await _key_still_works(session, stored.get("api_key")):
            _, stored["api_key"] = await api_keys.create(
                session, name="demo", scopes=["users:export_full"], created_by=admin.id
            )
        # Written before the commit: a failed commit leaves a stale key (replaced next
        # run), never a committed password nobody knows.
        _write_demo_state(state)
    return stored["admin_password"], stored["api_key"]


async def _key_still_works(session: AsyncSession, secret: str | None) -> bool:
    """Like api_keys.authenticate, without recording a use nobody made."""
    prefix = security.api_key_prefix(secret) if secret else None
    if secret is None or prefix is None:
        return False
    key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    return (
        key is not None
        and security.api_key_matches(secret, key.secret_hash)
        and key.revoked_at is None
        and (key.expires_at is None or key.expires_at > utcnow())
        and api_keys.grants(key.scope_list, "users:export_full")
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
