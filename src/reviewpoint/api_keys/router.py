"""Admins issue and revoke export API keys over HTTP (the CLI does the same)."""

from __future__ import annotations

from fastapi import APIRouter, status

from reviewpoint.api_keys import service
from reviewpoint.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from reviewpoint.auth.deps import CurrentAdmin
from reviewpoint.db import Session
from reviewpoint.inputs import RowId

router = APIRouter(
    prefix="/api/v1/api-keys",
    tags=["API keys"],
    responses={
        401: {"description": "Missing or invalid token"},
        403: {"description": "Not an administrator"},
    },
)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    session: Session, admin: CurrentAdmin, data: ApiKeyCreate
) -> ApiKeyCreated:
    key, secret = await service.create(
        session,
        name=data.name,
        scopes=data.scopes,
        expires_in_days=data.expires_in_days,
        created_by=admin.id,
    )
    public = ApiKeyPublic.model_validate(key)
    return ApiKeyCreated(**public.model_dump(), secret=secret)


@router.get("")
async def list_api_keys(session: Session, admin: CurrentAdmin) -> list[ApiKeyPublic]:
    return [ApiKeyPublic.model_validate(key) for key in await service.list_all(session)]


@router.delete("/{key_id:int}", responses={404: {"description": "No such key"}})
async def revoke_api_key(session: Session, admin: CurrentAdmin, key_id: RowId) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(await service.revoke(session, key_id=key_id))
