from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from reviewpoint import security
from reviewpoint.auth.deps import CurrentUser
from reviewpoint.auth.schemas import Token
from reviewpoint.config import AppSettings, JwtSecret
from reviewpoint.db import Session
from reviewpoint.errors import NotAuthenticated
from reviewpoint.users import service as users
from reviewpoint.users.schemas import UserPublic

router = APIRouter(prefix="/api/v1/auth", tags=["Auth"])


@router.post("/login", responses={401: {"description": "Wrong email or password"}})
async def login(
    session: Session,
    settings: AppSettings,
    jwt_secret: JwtSecret,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """OAuth2 password flow: `username` is the email."""
    user = await users.authenticate(session, email=form.username, password=form.password)
    if user is None:
        raise NotAuthenticated("Incorrect email or password")
    token = security.create_access_token(
        subject=str(user.id),
        secret=jwt_secret,
        lifetime=timedelta(minutes=settings.access_token_expire_minutes),
    )
    return Token(access_token=token)


@router.get("/me", responses={401: {"description": "Missing or invalid token"}})
async def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
