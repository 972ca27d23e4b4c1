"""Admins issue, list, rotate and revoke export API keys over HTTP (the CLI does the same)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, status

from reviewpoint.api_keys import service
from reviewpoint.api_keys.models import ApiKey
from reviewpoint.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeyRotate
from reviewpoint.auth.deps import BEARER_ERRORS, CurrentAdmin
from reviewpoint.db import Session
from reviewpoint.inputs import RowId

router = APIRouter(
    prefix="/api/v1/api-keys",
    tags=["API keys"],
    responses=BEARER_ERRORS,
)


# OpenAPI links: what a client (and the stateful contract test) can do next with the
# key just issued: export with its secret, rotate or revoke it by its id.
_KEY_ID = {"key_id": "$response.body#/id"}
_KEY = "#/paths/~1api~1v1~1api-keys~1{key_id}"
_ISSUED_KEY_LINKS = {
    "UseKey": {
        "operationRef": "#/paths/~1api~1v1~1users~1export/get",
        "parameters": {"header.X-API-Key": "$response.body#/secret"},
    },
    "RotateKey": {"operationRef": f"{_KEY}~1rotate/post", "parameters": _KEY_ID},
    "RevokeKey": {"operationRef": f"{_KEY}/delete", "parameters": _KEY_ID},
}
_ISSUED: dict[int | str, dict[str, object]] = {
    201: {"description": "The key, with its secret (shown once)", "links": _ISSUED_KEY_LINKS}
}


def _created(key: ApiKey, secret: str) -> ApiKeyCreated:
    return ApiKeyCreated(**ApiKeyPublic.model_validate(key).model_dump(), secret=secret)


@router.post("", status_code=status.HTTP_201_CREATED, responses=_ISSUED)
async def create_api_key(
    session: Session, admin: CurrentAdmin, data: ApiKeyCreate
) -> ApiKeyCreated:
    key, secret = await service.create(
        session,
        name=data.name,
        scopes=data.scopes,
        expires_in_days=data.expires_in_days,
        created_by=admin.id,
        fields=data.fields,
        anonymized_only=data.anonymized_only,
    )
    return _created(key, secret)


@router.get("", description="Every key by id, revoked and expired ones included; never a secret.")
async def list_api_keys(session: Session, admin: CurrentAdmin) -> list[ApiKeyPublic]:
    return [ApiKeyPublic.model_validate(key) for key in await service.list_all(session)]


@router.post(
    "/{key_id:int}/rotate",
    status_code=status.HTTP_201_CREATED,
    description=(
        "Issue a new key with the old one's name, scopes, data limits and expiry (not a grace "
        "deadline an earlier rotation set), with `rotated_from_id` naming the old "
        "key; its secret is shown only in this response. The old key keeps working "
        "for `grace_minutes` (default 60, 0 = it stops at once, at most 10080), or "
        "until its own expiry if that comes first. Rotating the same key again is "
        "allowed and never extends that deadline."
    ),
    responses={
        **_ISSUED,
        404: {"description": "No such key"},
        409: {"description": "The key is revoked or expired: issue a new one instead"},
    },
)
async def rotate_api_key(
    session: Session,
    admin: CurrentAdmin,
    key_id: RowId,
    data: Annotated[ApiKeyRotate | None, Body()] = None,
) -> ApiKeyCreated:
    grace = timedelta(minutes=(data or ApiKeyRotate()).grace_minutes)
    _, new, secret = await service.rotate(session, key_id=key_id, grace=grace, rotated_by=admin.id)
    return _created(new, secret)


@router.delete(
    "/{key_id:int}",
    description="Revoke at once: requests with the key get 401 from now on.",
    responses={
        404: {"description": "No such key"},
        409: {"description": "Already revoked; the detail says since when"},
    },
)
async def revoke_api_key(session: Session, admin: CurrentAdmin, key_id: RowId) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(await service.revoke(session, key_id=key_id))
