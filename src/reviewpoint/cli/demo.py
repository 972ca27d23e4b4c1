"""`reviewpoint demo`: what `make run` does, safe to run by mistake."""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import SecretStr
from rich.text import Text
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint import security
from reviewpoint.api_keys import service as api_keys
from reviewpoint.api_keys.models import ApiKey
from reviewpoint.cli.console import (
    current_settings,
    fail,
    one_line_errors,
    out,
    run,
    without_password,
)
from reviewpoint.db import create_engine, standalone_session, utcnow
from reviewpoint.logs import uvicorn_log_config
from reviewpoint.main import create_app
from reviewpoint.migrations import upgrade
from reviewpoint.users import repository as users_repository
from reviewpoint.users import service as users
from reviewpoint.users.models import User
from reviewpoint.users.schemas import UserCreate

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


@one_line_errors
def demo(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Migrate, add demo users, an admin and an export key, print how to use them, serve.

    Safe to repeat: credentials are kept in .reviewpoint/demo.json and reprinted.
    Refuses in prod, on a busy port, and on a database with users of its own.
    """
    settings = current_settings()
    if settings.env == "prod":
        raise fail("the demo never runs with REVIEWPOINT_ENV=prod: it adds a known admin")
    # Held from here on: a second demo on the same port stops before touching anything.
    with _listening_socket(host, port) as sock:
        state = _read_demo_state()
        database = without_password(settings.db_url)
        stored: dict[str, str] = state.get("databases", {}).get(database, {})
        admin_hash = run(_demo_admin_hash(settings.db_url))
        if admin_hash is not None and "admin_password" not in stored:
            raise fail(
                f"{DEMO_ADMIN_EMAIL} exists in {database} but its password is not in "
                f"{DEMO_STATE}: run the demo where it first ran, or on a new database"
            )
        upgrade(settings.db_url)
        password, key = run(_prepare_demo(settings.db_url, state, database))
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
                f"  console:         {base}/console (sign in as the admin)\n"
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
        config = uvicorn.Config(
            create_app(demo_settings),
            timeout_keep_alive=settings.keep_alive_seconds,
            log_level=settings.log_level,
            log_config=uvicorn_log_config(settings.log_level, settings.log_format),
        )
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
                    f"{without_password(db_url)} holds {foreign} user(s) the demo did not "
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
