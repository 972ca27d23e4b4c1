"""`reviewpoint api-keys ...`: export keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import typer

from reviewpoint.api_keys import service as api_keys
from reviewpoint.api_keys.models import ApiKey
from reviewpoint.api_keys.schemas import (
    DEFAULT_GRACE_MINUTES,
    MAX_GRACE_MINUTES,
    SCOPES,
    ApiKeyCreate,
    ApiKeyPublic,
    Scope,
)
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
from reviewpoint.db import standalone_session, utcnow

app = typer.Typer(help="Export API keys.", no_args_is_help=True)


@app.command("create")
@one_line_errors
def api_keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[list[str], typer.Option(help=f"Repeatable; one of {', '.join(SCOPES)}.")],
    expires_in_days: Annotated[int | None, typer.Option(help="Lifetime in days.")] = None,
    fields: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated export columns the key may receive (e.g. id,name,created_at); "
            "default: no limit."
        ),
    ] = None,
    anonymized_only: Annotated[
        bool,
        typer.Option(
            "--anonymized-only",
            help="Exports through the key always carry pseudonyms, never real emails or names.",
        ),
    ] = False,
) -> None:
    """Issue an export API key; prints the secret alone on stdout (shown only once)."""
    unknown = [s for s in scope if s not in SCOPES]
    if unknown:
        raise fail(f"unknown scope {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
    scopes: list[Scope] = [s for s in SCOPES if s in scope]
    # The HTTP API's own schema, so both refuse the same names and lifetimes.
    data = validated(
        ApiKeyCreate,
        name=name,
        scopes=scopes,
        expires_in_days=expires_in_days,
        fields=None if fields is None else fields.split(","),
        anonymized_only=anonymized_only,
    )

    async def create() -> tuple[int, str]:
        async with standalone_session(current_settings().db_url) as session:
            key, secret = await api_keys.create(
                session,
                name=data.name,
                scopes=data.scopes,
                expires_in_days=data.expires_in_days,
                fields=data.fields,
                anonymized_only=data.anonymized_only,
            )
            return key.id, secret

    key_id, secret = run(create())
    limits = _limits(data.fields, data.anonymized_only)
    err.print(
        f"created API key {key_id} '{data.name}' with scopes {' '.join(data.scopes)}"
        f"{'' if limits == 'none' else f' (limits: {limits})'}; store it now:",
        highlight=False,
        soft_wrap=True,
    )
    print(secret)


@app.command("list")
@one_line_errors
def api_keys_list(
    as_json: JsonFlag = False,
) -> None:
    """List API keys, revoked and expired ones included (never a secret or digest)."""

    async def listed() -> list[ApiKeyPublic]:
        async with standalone_session(current_settings().db_url) as session:
            return [ApiKeyPublic.model_validate(key) for key in await api_keys.list_all(session)]

    keys = run(listed())
    if as_json:
        print_json(keys)
        return
    now = utcnow()
    print_table(
        [
            column("id"),
            column("name"),
            # The prefix identifies the key: it never wraps.
            column("prefix", no_wrap=True, min_width=12),
            column("scopes", min_width=len("users:export")),
            column("limits"),
            column("created", min_width=TIMESTAMP_WIDTH),
            column("last used", min_width=TIMESTAMP_WIDTH),
            column("state", min_width=TIMESTAMP_WIDTH),
        ],
        (
            [
                str(key.id),
                key.name,
                key.prefix,
                " ".join(key.scopes),
                _limits(key.fields, key.anonymized_only),
                _provenance(key),
                when(key.last_used_at),
                _state(key, now),
            ]
            for key in keys
        ),
    )


def _limits(fields: list[str] | None, anonymized_only: bool) -> str:
    """A key's data limits in one cell: `fields a,b`, `anonymized only`, both, or `none`."""
    parts = [] if fields is None else [f"fields {','.join(fields)}"]
    if anonymized_only:
        parts.append("anonymized only")
    return "; ".join(parts) or "none"


def _provenance(key: ApiKeyPublic) -> str:
    """When, by whom (`cli` for keys made here) and, for a rotation, replacing which key."""
    by = key.created_by_email or (f"user {key.created_by}" if key.created_by else "cli")
    replacing = f", replacing {key.rotated_from_id}" if key.rotated_from_id else ""
    return f"{when(key.created_at)} by {by}{replacing}"


def _state(key: ApiKeyPublic, now: datetime) -> str:
    if key.revoked_at is not None:
        return f"revoked {when(key.revoked_at)}"
    if key.expires_at is None:
        return "live"
    if key.expires_at <= now:
        return f"expired {when(key.expires_at)}"
    return f"live until {when(key.expires_at)}"


@app.command("rotate")
@one_line_errors
def api_keys_rotate(
    key_id: RowIdArgument,
    grace_minutes: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_GRACE_MINUTES,
            help="How long the old secret keeps working; 0 stops it at once.",
        ),
    ] = DEFAULT_GRACE_MINUTES,
) -> None:
    """Replace a key with a new one of the same name, scopes, limits and expiry; prints the new
    secret alone on stdout (shown only once)."""

    async def rotate() -> tuple[ApiKey, ApiKey, str]:
        async with standalone_session(current_settings().db_url) as session:
            return await api_keys.rotate(
                session, key_id=key_id, grace=timedelta(minutes=grace_minutes)
            )

    old, new, secret = run(rotate())
    assert old.expires_at is not None  # a rotation always sets the old key's deadline
    stops = "stops working now" if grace_minutes == 0 else f"works until {when(old.expires_at)}"
    err.print(
        f"rotated API key {old.id} '{old.name}' into key {new.id} ({new.prefix}); "
        f"the old secret {stops}; store the new one now:",
        highlight=False,
    )
    print(secret)


@app.command("revoke")
@one_line_errors
def api_keys_revoke(key_id: RowIdArgument) -> None:
    """Revoke an API key at once; requests using it get 401. A key already revoked is
    left as it was, with a note (exit code 0)."""

    async def revoke() -> None:
        async with standalone_session(current_settings().db_url) as session:
            await api_keys.revoke(session, key_id=key_id)

    try:
        run(revoke())
    except api_keys.AlreadyRevoked as already:
        # The key is dead, as asked: a script revoking it again has nothing to fix.
        err.print(f"already revoked: {already.detail}", highlight=False)
        return
    err.print(f"revoked API key {key_id}")
