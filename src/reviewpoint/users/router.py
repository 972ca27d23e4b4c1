"""The core user API for administrators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from reviewpoint.auth.deps import BEARER_ERRORS, CurrentAdmin
from reviewpoint.db import Session
from reviewpoint.inputs import PageOffset, RowId
from reviewpoint.users import service
from reviewpoint.users.schemas import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    UserCreate,
    UserPublic,
    UsersPublic,
    UserUpdate,
)

router = APIRouter(
    prefix="/api/v1/users",
    tags=["User Management"],
    responses=BEARER_ERRORS,
)


# Setting a password waits for an Argon2 thread; a flood beyond the queue is refused.
_HASHING_BUSY: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many password checks in progress; retry shortly"}
}
_LAST_ADMIN = "a change that would leave no active administrator"

# OpenAPI links: what a client (and the stateful contract test) can do next with the
# user just created, naming its id from the 201's body.
_USER_ID = {"user_id": "$response.body#/id"}
_USER = "#/paths/~1api~1v1~1users~1{user_id}"
_CREATED_USER_LINKS = {
    "GetUser": {"operationRef": f"{_USER}/get", "parameters": _USER_ID},
    "UpdateUser": {"operationRef": f"{_USER}/patch", "parameters": _USER_ID},
    "DeleteUser": {"operationRef": f"{_USER}/delete", "parameters": _USER_ID},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"description": "The user, as stored", "links": _CREATED_USER_LINKS},
        409: {"description": "Email already registered"},
        **_HASHING_BUSY,
    },
)
async def create_user(session: Session, admin: CurrentAdmin, data: UserCreate) -> UserPublic:
    return UserPublic.model_validate(await service.create(session, data=data))


@router.get("")
async def list_users(
    session: Session,
    admin: CurrentAdmin,
    offset: PageOffset = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> UsersPublic:
    page, count = await service.list_page(session, offset=offset, limit=limit)
    return UsersPublic(data=[UserPublic.model_validate(user) for user in page], count=count)


@router.get("/{user_id:int}", responses={404: {"description": "No such user"}})
async def get_user(session: Session, admin: CurrentAdmin, user_id: RowId) -> UserPublic:
    return UserPublic.model_validate(await service.get(session, user_id=user_id))


@router.patch(
    "/{user_id:int}",
    responses={
        404: {"description": "No such user"},
        409: {"description": f"Email taken, or {_LAST_ADMIN} (deactivating or demoting the last)"},
        **_HASHING_BUSY,
    },
)
async def update_user(
    session: Session, admin: CurrentAdmin, user_id: RowId, data: UserUpdate
) -> UserPublic:
    return UserPublic.model_validate(await service.update(session, user_id=user_id, data=data))


@router.delete(
    "/{user_id:int}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        404: {"description": "No such user"},
        409: {"description": f"The caller's own account, or {_LAST_ADMIN}"},
    },
)
async def delete_user(session: Session, admin: CurrentAdmin, user_id: RowId) -> None:
    await service.soft_delete(session, user_id=user_id, by_id=admin.id)
