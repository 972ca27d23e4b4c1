"""The API keys page: create (the secret shown once), list, rotate and revoke,
each change confirmed on a page of its own. The API's key service does the work."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from reviewpoint.api_keys import service
from reviewpoint.api_keys.models import ApiKey
from reviewpoint.api_keys.schemas import SCOPES, ApiKeyCreate, ApiKeyRotate
from reviewpoint.auth.deps import require_feature
from reviewpoint.console.deps import CheckedForm, SignedInAdmin, page
from reviewpoint.console.sessions import SignedIn
from reviewpoint.db import Session, utcnow
from reviewpoint.errors import AppError
from reviewpoint.inputs import RowId

KEYS_PATH = "/console/keys"
router = APIRouter(
    prefix=KEYS_PATH,
    include_in_schema=False,
    dependencies=[Depends(require_feature("console"))],
)


def _state(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expired(utcnow()):
        return "expired"
    return "live"


async def _keys_page(
    request: Request,
    session: Session,
    signed_in: SignedIn,
    *,
    error: str | None = None,
    form: Mapping[str, object] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    keys = await service.list_all(session)
    return page(
        request,
        "keys.html",
        {
            "active": "keys",
            "keys": [(key, _state(key)) for key in keys],
            "scopes": SCOPES,
            "error": error,
            "form": form
            or {
                "name": "",
                "scopes": [],
                "expires_in_days": "",
                "fields": "",
                "anonymized_only": False,
            },
        },
        status_code=status_code,
        signed_in=signed_in,
    )


def _problem(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'form'}: {item['msg']}"
        for item in error.errors()
    )


@router.get("")
async def keys_page(request: Request, session: Session, signed_in: SignedInAdmin) -> HTMLResponse:
    return await _keys_page(request, session, signed_in)


@router.post("")
async def create_key(
    request: Request,
    session: Session,
    signed_in: CheckedForm,
    name: Annotated[str, Form(max_length=1000)] = "",
    scopes: Annotated[list[str] | None, Form(max_length=100)] = None,
    expires_in_days: Annotated[str, Form(max_length=20)] = "",
    fields: Annotated[str, Form(max_length=1000)] = "",
    anonymized_only: Annotated[str, Form(max_length=10)] = "",
) -> HTMLResponse:
    form = {
        "name": name,
        "scopes": scopes or [],
        "expires_in_days": expires_in_days,
        "fields": fields,
        "anonymized_only": bool(anonymized_only),
    }
    # The API's own validation: fields as a comma-separated list, empty for all.
    field_list = [part.strip() for part in fields.split(",")] if fields.strip() else None
    try:
        data = ApiKeyCreate.model_validate(
            {
                "name": name,
                "scopes": scopes or [],
                "expires_in_days": _form_integer(expires_in_days) if expires_in_days else None,
                "fields": field_list,
                "anonymized_only": bool(anonymized_only),
            }
        )
    except ValidationError as error:
        return await _keys_page(
            request, session, signed_in, error=_problem(error), form=form, status_code=422
        )
    key, secret = await service.create(
        session,
        name=data.name,
        scopes=data.scopes,
        expires_in_days=data.expires_in_days,
        created_by=signed_in.user.id,
        fields=data.fields,
        anonymized_only=data.anonymized_only,
    )
    return _secret_page(request, signed_in, key, secret, action="created")


def _form_integer(text: str) -> int | str:
    """A form field's number as the int the API's schemas take (they refuse JSON
    strings for integers); other text stays text, for the schema to refuse."""
    return int(text) if re.fullmatch(r"\s*[+-]?[0-9]+\s*", text) else text


def _secret_page(
    request: Request, signed_in: SignedIn, key: ApiKey, secret: str, *, action: str
) -> HTMLResponse:
    """The one time the secret is shown (the response is never cached: console/headers.py)."""
    return page(
        request,
        "key_secret.html",
        {"active": "keys", "key": key, "secret": secret, "action": action},
        status_code=201,
        signed_in=signed_in,
    )


@router.get("/{key_id:int}/{action:str}")
async def confirm(
    request: Request, session: Session, signed_in: SignedInAdmin, key_id: RowId, action: str
) -> Response:
    """Asks before a rotation or a revocation: a page of its own, no script needed."""
    if action not in ("rotate", "revoke"):
        return RedirectResponse(KEYS_PATH, status_code=303)
    key = await session.get(ApiKey, key_id)
    if key is None:
        return await _keys_page(
            request, session, signed_in, error="No such API key.", status_code=404
        )
    return page(
        request,
        "key_confirm.html",
        {"active": "keys", "key": key, "action": action},
        signed_in=signed_in,
    )


@router.post("/{key_id:int}/rotate")
async def rotate_key(
    request: Request,
    session: Session,
    signed_in: CheckedForm,
    key_id: RowId,
    grace_minutes: Annotated[str, Form(max_length=20)] = "",
) -> HTMLResponse:
    try:
        grace = ApiKeyRotate.model_validate(
            {"grace_minutes": _form_integer(grace_minutes)} if grace_minutes else {}
        )
        _, new, secret = await service.rotate(
            session,
            key_id=key_id,
            grace=timedelta(minutes=grace.grace_minutes),
            rotated_by=signed_in.user.id,
        )
    except ValidationError as error:
        return await _keys_page(request, session, signed_in, error=_problem(error), status_code=422)
    except AppError as error:  # 404, or 409 for a revoked or expired key
        return await _keys_page(
            request, session, signed_in, error=error.detail, status_code=error.status_code
        )
    return _secret_page(request, signed_in, new, secret, action="rotated")


@router.post("/{key_id:int}/revoke")
async def revoke_key(
    request: Request, session: Session, signed_in: CheckedForm, key_id: RowId
) -> Response:
    try:
        await service.revoke(session, key_id=key_id)
    except AppError as error:  # 404, or 409 when already revoked
        return await _keys_page(
            request, session, signed_in, error=error.detail, status_code=error.status_code
        )
    return RedirectResponse(KEYS_PATH, status_code=303)
