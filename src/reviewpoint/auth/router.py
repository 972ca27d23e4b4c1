from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordRequestForm

from reviewpoint import security
from reviewpoint.admission.gate import AdmissionDep
from reviewpoint.auth.deps import BEARER_ERRORS, CurrentUser
from reviewpoint.auth.schemas import Token
from reviewpoint.config import AppSettings, JwtSecret
from reviewpoint.db import DatabaseDep
from reviewpoint.errors import NotAuthenticated
from reviewpoint.inputs import NO_NUL_PATTERN, nul_error
from reviewpoint.users import service as users
from reviewpoint.users.schemas import UserPublic

router = APIRouter(prefix="/api/v1/auth", tags=["Auth"])


# What the login checks, stated in its schema: FastAPI reads an empty form field as
# missing (422) and `_refuse_nul` refuses NUL, while OAuth2PasswordRequestForm's
# schema allowed both, so most generated "valid" logins were refused.
_CREDENTIAL = {"minLength": 1, "pattern": NO_NUL_PATTERN}


class LoginForm(OAuth2PasswordRequestForm):
    """The OAuth2 password form, with `username` and `password` documented as checked."""

    def __init__(
        self,
        *,
        username: Annotated[str, Form(json_schema_extra=_CREDENTIAL)],
        password: Annotated[str, Form(json_schema_extra={**_CREDENTIAL, "format": "password"})],
        grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
        scope: Annotated[str, Form()] = "",
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form(json_schema_extra={"format": "password"})] = None,
    ) -> None:
        super().__init__(
            grant_type=grant_type,
            username=username,
            password=password,
            scope=scope,
            client_id=client_id,
            client_secret=client_secret,
        )


def _refuse_nul(form: OAuth2PasswordRequestForm) -> None:
    # The form is not a pydantic model (InputModel): the same rule, checked here.
    failed = [field for field in ("username", "password") if "\x00" in getattr(form, field)]
    if failed:
        raise RequestValidationError([nul_error(["body", field]) for field in failed])


@router.post(
    "/login",
    responses={
        401: {"description": "Wrong email or password"},
        429: {"description": "Too many attempts from this address or for this account"},
    },
)
async def login(
    request: Request,
    response: Response,
    database: DatabaseDep,
    admission: AdmissionDep,
    settings: AppSettings,
    jwt_secret: JwtSecret,
    form: Annotated[LoginForm, Depends()],
) -> Token:
    """OAuth2 password flow: `username` is the email.

    Attempts count against the client address and the account before any
    password is checked, so a flood costs no Argon2 time once over budget.
    """
    _refuse_nul(form)
    address = request.client.host if request.client else "unknown"
    budget = await admission.admit_login(address=address, account=form.username.lower())
    budget_headers = budget.headers()  # on the 401 as on the token
    response.headers.update(budget_headers)
    try:
        user = await users.authenticate(database, email=form.username, password=form.password)
    except security.PasswordWorkBusy:
        # The process-wide cap on password checks (security.py), a concurrency refusal.
        admission.on_refusal("concurrency", "login")
        raise
    if user is None:
        raise NotAuthenticated("Incorrect email or password", headers=budget_headers)
    token = security.create_access_token(
        subject=str(user.id),
        secret=jwt_secret,
        lifetime=timedelta(minutes=settings.access_token_expire_minutes),
    )
    return Token(access_token=token)


@router.get("/me", responses=BEARER_ERRORS)
async def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
