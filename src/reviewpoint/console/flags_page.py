"""The flags page: each feature flag's state and where it comes from, turned on,
off or reset after a confirmation, and the latest changes. The flag service the
API's `/api/v1/features` calls does the work, through this worker's flags so the
change is served at once."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint.auth.deps import require_feature
from reviewpoint.config import AppSettings, Settings
from reviewpoint.console.deps import CheckedForm, SignedInAdmin, page
from reviewpoint.console.sessions import SignedIn
from reviewpoint.db import DatabaseDep
from reviewpoint.errors import AppError
from reviewpoint.features import service
from reviewpoint.features.catalog import FEATURES
from reviewpoint.features.flags import FeatureFlagsDep
from reviewpoint.features.service import ChangedBy, FlagState

FLAGS_PATH = "/console/flags"
# The newest changes shown; the API's /api/v1/features/changes pages through all.
CHANGES_SHOWN = 20
ACTIONS = ("enable", "disable", "reset")

router = APIRouter(
    prefix=FLAGS_PATH,
    include_in_schema=False,
    dependencies=[Depends(require_feature("console"))],
)


async def _flags_page(
    request: Request,
    database: DatabaseDep,
    settings: AppSettings,
    signed_in: SignedIn,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    # Its own short read: a POST that failed has no request transaction to reuse.
    async with database.transaction(read_only=True) as session:
        states = await service.list_states(session, settings=settings)
        changes, count = await service.list_changes(session, offset=0, limit=CHANGES_SHOWN)
    return page(
        request,
        "flags.html",
        {
            "active": "flags",
            "states": states,
            "changes": changes,
            "change_count": count,
            "error": error,
        },
        status_code=status_code,
        signed_in=signed_in,
    )


def _refusal(name: str, action: str) -> str | None:
    """Why a flag name or action from the URL is not one we know, or None."""
    if name not in FEATURES:
        return f"No feature flag is named '{name}'."
    if action not in ACTIONS:
        return f"'{action}' is not something a flag can do: enable, disable or reset."
    return None


@router.get("")
async def flags_page(
    request: Request, database: DatabaseDep, settings: AppSettings, signed_in: SignedInAdmin
) -> HTMLResponse:
    return await _flags_page(request, database, settings, signed_in)


@router.get("/{name}/{action}")
async def confirm(
    request: Request,
    database: DatabaseDep,
    settings: AppSettings,
    signed_in: SignedInAdmin,
    name: str,
    action: str,
) -> HTMLResponse:
    """Asks before a change: a page of its own, no script needed."""
    problem = _refusal(name, action)
    if problem is not None:
        return await _flags_page(
            request, database, settings, signed_in, error=problem, status_code=404
        )
    async with database.transaction(read_only=True) as session:
        states = await service.list_states(session, settings=settings)
    state = next(state for state in states if state.name == name)
    return page(
        request,
        "flag_confirm.html",
        {"active": "flags", "state": state, "action": action},
        signed_in=signed_in,
    )


@router.post("/{name}/{action}")
async def change(
    request: Request,
    database: DatabaseDep,
    settings: AppSettings,
    flags: FeatureFlagsDep,
    signed_in: CheckedForm,
    name: str,
    action: str,
) -> Response:
    problem = _refusal(name, action)
    if problem is not None:
        return await _flags_page(
            request, database, settings, signed_in, error=problem, status_code=404
        )
    by = ChangedBy.admin(signed_in.user)
    try:
        await flags.change(lambda session: _write(session, settings, name, action, by))
    except AppError as error:  # 409: changed by someone else at the same moment
        return await _flags_page(
            request,
            database,
            settings,
            signed_in,
            error=error.detail,
            status_code=error.status_code,
        )
    return RedirectResponse(FLAGS_PATH, status_code=303)


async def _write(
    session: AsyncSession, settings: Settings, name: str, action: str, by: ChangedBy
) -> FlagState:
    """The API's PUT (enable, disable) or DELETE (reset) of a flag."""
    if action == "reset":
        return await service.reset(session, settings=settings, name=name, by=by)
    return await service.set_override(
        session, settings=settings, name=name, enabled=action == "enable", by=by
    )
