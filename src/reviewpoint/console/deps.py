"""What every console page shares: who is signed in, the CSRF check, and rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from reviewpoint.config import JwtSecret
from reviewpoint.console import sessions
from reviewpoint.console.sessions import SESSION_COOKIE, SignedIn
from reviewpoint.db import DatabaseDep
from reviewpoint.errors import NotAuthenticated, NotPermitted

SIGN_IN_PATH = "/console/sign-in"
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class SignInRequired(NotAuthenticated):
    """No live console session: pages redirect to the sign-in form (console/__init__.py)."""

    def __init__(self) -> None:
        super().__init__("Sign in to the console first")


class CsrfRefused(NotPermitted):
    def __init__(self) -> None:
        super().__init__("The form's CSRF token is missing or wrong: reload the page and retry")


def secure(request: Request) -> bool:
    """Secure cookies whenever the browser reached us over HTTPS (behind a proxy too,
    as uvicorn's proxy headers report it)."""
    return request.url.scheme == "https"


def same_origin(request: Request) -> None:
    """A browser says where a POST comes from; one from another site is refused
    whatever it carries.

    `Sec-Fetch-Site` where the browser sends it; else `Origin`, which our own
    pages send as `null` (their `Referrer-Policy: no-referrer` hides it).
    """
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site not in ("same-origin", "none"):
        raise CsrfRefused()
    if origin not in (None, "null") and origin != str(request.base_url).rstrip("/"):
        raise CsrfRefused()


async def get_signed_in(request: Request, database: DatabaseDep, jwt_secret: JwtSecret) -> SignedIn:
    cookie = request.cookies.get(SESSION_COOKIE)
    token = sessions.unsign(jwt_secret, cookie) if cookie else None
    if token is None:
        raise SignInRequired()
    async with database.transaction(read_only=True) as session:
        signed_in = await sessions.find(session, token=token)
    if signed_in is None:
        raise SignInRequired()
    return signed_in


SignedInAdmin = Annotated[SignedIn, Depends(get_signed_in)]


async def checked_form(
    request: Request,
    signed_in: SignedInAdmin,
    jwt_secret: JwtSecret,
    csrf_token: Annotated[str | None, Form(max_length=128)] = None,
) -> SignedIn:
    """The signed-in admin, once the form proves it came from one of our pages."""
    same_origin(request)
    if not sessions.csrf_valid(jwt_secret, signed_in.token, csrf_token):
        raise CsrfRefused()
    return signed_in


# Every state-changing console route takes this instead of SignedInAdmin.
CheckedForm = Annotated[SignedIn, Depends(checked_form)]


def page(
    request: Request,
    template: str,
    context: dict[str, object],
    *,
    status_code: int = 200,
    signed_in: SignedIn | None = None,
) -> HTMLResponse:
    """A page; with `signed_in`, the header shows the admin and carries the sign-out form."""
    if signed_in is not None:
        secret: str = request.app.state.jwt_secret
        context = {
            **context,
            "admin": signed_in.user,
            "csrf_token": sessions.csrf_token(secret, signed_in.token),
        }
    return templates.TemplateResponse(request, template, context, status_code=status_code)
