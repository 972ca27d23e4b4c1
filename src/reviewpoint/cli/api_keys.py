"""`reviewpoint api-keys ...`: export keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from reviewpoint.api_keys import service as api_keys
from reviewpoint.api_keys.schemas import SCOPES, ApiKeyCreate, Scope
from reviewpoint.cli.console import (
    current_settings,
    err,
    fail,
    one_line_errors,
    out,
    run,
    validated,
    when,
)
from reviewpoint.db import standalone_session

app = typer.Typer(help="Export API keys.", no_args_is_help=True)


@app.command("create")
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
    data = validated(ApiKeyCreate, name=name, scopes=scopes, expires_in_days=expires_in_days)

    async def create() -> tuple[int, str]:
        async with standalone_session(current_settings().db_url) as session:
            key, secret = await api_keys.create(
                session, name=data.name, scopes=data.scopes, expires_in_days=data.expires_in_days
            )
            return key.id, secret

    key_id, secret = run(create())
    err.print(
        f"created API key {key_id} '{data.name}' with scopes {' '.join(data.scopes)};"
        " store it now:",
        highlight=False,
        soft_wrap=True,
    )
    print(secret)


@app.command("list")
@one_line_errors
def api_keys_list() -> None:
    """List API keys (never their secrets)."""

    async def rows() -> list[list[str]]:
        async with standalone_session(current_settings().db_url) as session:
            return [
                [
                    str(key.id),
                    key.name,
                    key.prefix,
                    key.scopes,
                    when(key.created_at),
                    when(key.last_used_at),
                    when(key.expires_at),
                    when(key.revoked_at),
                ]
                for key in await api_keys.list_all(session)
            ]

    # The prefix identifies the key: never cut it short with "…", as rich does to
    # columns of a table wider than the terminal.
    prefix = Column("prefix", no_wrap=True, min_width=12)
    table = Table("id", "name", prefix, "scopes", "created", "last used", "expires", "revoked")
    for row in run(rows()):
        table.add_row(*map(Text, row))
    # Piped, rich assumes 80 columns and cuts values short; print them whole.
    (out if out.is_terminal else Console(width=10_000)).print(table)


@app.command("revoke")
@one_line_errors
def api_keys_revoke(key_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Revoke an API key at once; requests using it get 401."""

    async def revoke() -> None:
        async with standalone_session(current_settings().db_url) as session:
            await api_keys.revoke(session, key_id=key_id)

    run(revoke())
    err.print(f"revoked API key {key_id}")
