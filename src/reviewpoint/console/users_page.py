"""The users page: find a user by email, page through everyone by id, deactivate,
reactivate or delete after a confirmation. The user service of `/api/v1/users`
does the work, so its rules hold here too: the last active administrator stays,
and an administrator cannot delete their own account."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from reviewpoint.auth.deps import require_feature
from reviewpoint.console.deps import CheckedForm, SignedInAdmin, page
from reviewpoint.console.sessions import SignedIn
from reviewpoint.db import Session
from reviewpoint.errors import AppError
from reviewpoint.inputs import INT32_MAX, RowId
from reviewpoint.users import service
from reviewpoint.users.models import EMAIL_MAX_LENGTH, User
from reviewpoint.users.schemas import UserUpdate

USERS_PATH = "/console/users"
# Rows per page: the page and its assets stay under 100 KB (issue #11).
PAGE_ROWS = 50
# What each action did, for the line the page shows after it.
DONE = {"deactivate": "deactivated", "reactivate": "reactivated", "delete": "deleted"}

router = APIRouter(
    prefix=USERS_PATH,
    include_in_schema=False,
    dependencies=[Depends(require_feature("console"))],
)


class BadQuery(ValueError):
    """A search or paging value the page cannot use; its message is shown in place."""


def _row_id(name: str, text: str) -> int | None:
    if not text:
        return None
    if not text.isdecimal() or not 0 <= int(text) <= INT32_MAX:
        raise BadQuery(f"{name} must be a user id (a whole number), not '{text}'.")
    return int(text)


async def _users_page(
    request: Request,
    session: Session,
    signed_in: SignedIn,
    *,
    email: str = "",
    after: str = "",
    before: str = "",
    done: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    users: list[User] = []
    more_before = more_after = False
    try:
        if len(email) > EMAIL_MAX_LENGTH:
            raise BadQuery(f"An email has at most {EMAIL_MAX_LENGTH} characters.")
        after_id, before_id = _row_id("after", after), _row_id("before", before)
        # One row past the page says whether another page follows, without a count.
        found = await service.list_after(
            session,
            limit=PAGE_ROWS + 1,
            after_id=after_id,
            before_id=before_id,
            email=email or None,
        )
    except BadQuery as problem:
        error, status_code = str(problem), 422
    else:
        if before_id is not None:
            more_before, more_after = len(found) > PAGE_ROWS, True
            users = list(found[-PAGE_ROWS:])
        else:
            more_before, more_after = after_id is not None, len(found) > PAGE_ROWS
            users = list(found[:PAGE_ROWS])
    return page(
        request,
        "users.html",
        {
            "active": "users",
            "users": users,
            "email": email,
            "first_id": users[0].id if users else None,
            "last_id": users[-1].id if users else None,
            "more_before": more_before,
            "more_after": more_after,
            "done": DONE.get(done),
            "error": error,
            "me": signed_in.user.id,
        },
        status_code=status_code,
        signed_in=signed_in,
    )


@router.get("")
async def users_page(
    request: Request,
    session: Session,
    signed_in: SignedInAdmin,
    email: Annotated[str, Query()] = "",
    after: Annotated[str, Query()] = "",
    before: Annotated[str, Query()] = "",
    done: Annotated[str, Query()] = "",
) -> HTMLResponse:
    return await _users_page(
        request,
        session,
        signed_in,
        email=email.strip(),
        after=after.strip(),
        before=before.strip(),
        done=done,
    )


@router.get("/{user_id:int}/{action}")
async def confirm(
    request: Request, session: Session, signed_in: SignedInAdmin, user_id: RowId, action: str
) -> Response:
    """Asks before a change: a page of its own, no script needed."""
    if action not in DONE:
        return RedirectResponse(USERS_PATH, status_code=303)
    try:
        user = await service.get(session, user_id=user_id)
    except AppError as error:  # 404
        return await _users_page(
            request, session, signed_in, error=error.detail, status_code=error.status_code
        )
    return page(
        request,
        "user_confirm.html",
        {"active": "users", "user": user, "action": action, "me": signed_in.user.id},
        signed_in=signed_in,
    )


@router.post("/{user_id:int}/{action}")
async def change(
    request: Request, session: Session, signed_in: CheckedForm, user_id: RowId, action: str
) -> Response:
    if action not in DONE:
        return await _users_page(
            request,
            session,
            signed_in,
            error=f"'{action}' is not something the console does to a user.",
            status_code=404,
        )
    try:
        user = await service.get(session, user_id=user_id)
    except AppError as error:  # 404
        return await _users_page(
            request, session, signed_in, error=error.detail, status_code=error.status_code
        )
    try:
        if action == "delete":
            await service.soft_delete(session, user_id=user_id, by_id=signed_in.user.id)
        else:
            data = UserUpdate(is_active=action == "reactivate")
            await service.update(session, user_id=user_id, data=data)
    except AppError as error:  # 409: the last active admin, or one's own account
        # The user's row under the message, unchanged.
        return await _users_page(
            request,
            session,
            signed_in,
            email=user.email,
            error=error.detail,
            status_code=error.status_code,
        )
    query = urlencode({"email": user.email, "done": action})
    return RedirectResponse(f"{USERS_PATH}?{query}", status_code=303)
