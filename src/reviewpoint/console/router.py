"""The console's pages: sign in and out, and the export page with its download.

Routes parse, authorise by dependency and call the services the JSON API
calls; a download is the API's own export handler, given the signed-in admin
as its caller. None of it is in the OpenAPI schema: it is a UI, not an API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from reviewpoint import security
from reviewpoint.admission.gate import AdmissionDep
from reviewpoint.auth.deps import ExportPrincipal, require_feature
from reviewpoint.config import AppSettings, JwtSecret
from reviewpoint.console import sessions
from reviewpoint.console.deps import (
    SIGN_IN_PATH,
    CheckedForm,
    SignedInAdmin,
    page,
    same_origin,
    secure,
)
from reviewpoint.console.export_form import (
    COUNT_PATH,
    DEFAULT_FIELDS,
    FIELD_NAMES,
    FORMAT_NAMES,
    ExportChoice,
    count_users,
    preview,
)
from reviewpoint.console.sessions import SESSION_COOKIE, SIGN_IN_COOKIE
from reviewpoint.db import DatabaseDep
from reviewpoint.errors import AppError
from reviewpoint.exports.anonymize import PseudonymsDep
from reviewpoint.exports.attempt import TrackedExport, track_export
from reviewpoint.exports.router import export_users, export_users_full
from reviewpoint.exports.schemas import (
    ExportParameters,
    FullExportParameters,
    refuse_fields_on_minimal,
)
from reviewpoint.users import service as users

HOME_PATH = "/console/export"

router = APIRouter(
    prefix="/console",
    include_in_schema=False,
    dependencies=[Depends(require_feature("console"))],
)


async def get_console_exporter(request: Request, signed_in: SignedInAdmin) -> ExportPrincipal:
    """The signed-in admin as an export's caller: what a bearer token makes them on the API."""
    user = signed_in.user
    caller = ExportPrincipal(kind="user", id=user.id, label=user.email, name=user.email)
    request.state.principal = caller  # for the audit trail, as auth.deps does
    return caller


ConsoleExporter = Annotated[ExportPrincipal, Depends(get_console_exporter)]


@router.get("")
async def home() -> RedirectResponse:
    return RedirectResponse(HOME_PATH, status_code=303)


# Sign in and out


@router.get("/sign-in")
async def sign_in_form(request: Request, jwt_secret: JwtSecret) -> HTMLResponse:
    return _sign_in_page(request, jwt_secret)


def _sign_in_page(
    request: Request,
    jwt_secret: str,
    *,
    error: str | None = None,
    email: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The form, with a fresh double-submit token: a random cookie and its MAC in the form."""
    nonce = sessions.new_token()
    response = page(
        request,
        "sign_in.html",
        {
            "error": error,
            "email": email,
            "csrf_token": sessions.csrf_token(jwt_secret, nonce),
        },
        status_code=status_code,
    )
    response.headers.update(headers or {})
    response.set_cookie(
        SIGN_IN_COOKIE,
        sessions.sign(jwt_secret, nonce),
        max_age=int(sessions.SIGN_IN_LIFETIME.total_seconds()),
        path=SIGN_IN_PATH,
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )
    return response


@router.post("/sign-in")
async def sign_in(
    request: Request,
    database: DatabaseDep,
    admission: AdmissionDep,
    jwt_secret: JwtSecret,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str | None, Form(max_length=128)] = None,
) -> Response:
    """The login endpoint's checks in its order (rate limit, then password), for admins only."""
    same_origin(request)
    cookie = request.cookies.get(SIGN_IN_COOKIE)
    nonce = sessions.unsign(jwt_secret, cookie) if cookie else None
    if nonce is None or not sessions.csrf_valid(jwt_secret, nonce, csrf_token):
        # Most often a form left open past its hour: a fresh one, and no attempt counted.
        return _sign_in_page(
            request,
            jwt_secret,
            error="This sign-in form expired or was not ours: enter your password again.",
            email=email,
            status_code=403,
        )
    if "\x00" in email or "\x00" in password or not email or not password:
        return _sign_in_page(
            request, jwt_secret, error="Enter your email and password.", status_code=422
        )
    address = request.client.host if request.client else "unknown"
    try:
        await admission.admit_login(address=address, account=email.lower())
        try:
            user = await users.authenticate(database, email=email, password=password)
        except security.PasswordWorkBusy:
            # The process-wide cap on password checks, counted as the API's login counts it.
            admission.on_refusal("concurrency", "login")
            raise
    except AppError as error:  # 429 (rate limit, password checks busy), 503 (limit store down)
        return _sign_in_page(
            request,
            jwt_secret,
            error=error.detail,
            email=email,
            status_code=error.status_code,
            headers=error.response_headers(),
        )
    if user is None:
        return _sign_in_page(
            request,
            jwt_secret,
            error="Incorrect email or password.",
            email=email,
            status_code=401,
        )
    if not user.is_admin:
        return _sign_in_page(
            request,
            jwt_secret,
            error="Only administrators can sign in to the console.",
            email=email,
            status_code=403,
        )
    async with database.transaction() as session:
        signed_in = await sessions.start(session, user_id=user.id)
    response = RedirectResponse(HOME_PATH, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        sessions.sign(jwt_secret, signed_in.token),
        max_age=int(sessions.SESSION_LIFETIME.total_seconds()),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )
    response.delete_cookie(
        SIGN_IN_COOKIE, path=SIGN_IN_PATH, httponly=True, samesite="strict", secure=secure(request)
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request, database: DatabaseDep, signed_in: CheckedForm) -> Response:
    async with database.transaction() as session:
        await sessions.end(session, token=signed_in.token)
    response = RedirectResponse(SIGN_IN_PATH, status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/console", httponly=True, samesite="strict", secure=secure(request)
    )
    return response


# Export


async def _export_context(request: Request, pseudonyms: PseudonymsDep) -> dict[str, object]:
    # A first visit shows the full export with every default column.
    values = dict(request.query_params) or {"kind": "full", "fields": DEFAULT_FIELDS}
    choice = ExportChoice.from_form(values)
    shown = preview(choice, pseudonyms=pseudonyms, base_url=str(request.base_url))
    return {
        "choice": choice,
        "preview": shown,
        "formats": FORMAT_NAMES,
        "field_names": FIELD_NAMES,
    }


ExportContext = Annotated[dict[str, object], Depends(_export_context)]


@router.get("/export")
async def export_page(
    request: Request, signed_in: SignedInAdmin, context: ExportContext
) -> HTMLResponse:
    return page(request, "export.html", context, signed_in=signed_in)


@router.get("/export/preview")
async def export_preview(
    request: Request, _signed_in: SignedInAdmin, context: ExportContext
) -> HTMLResponse:
    """The command lines alone, for htmx to swap in as the form changes."""
    return page(request, "export_preview.html", context)


@router.get(COUNT_PATH.removeprefix("/console"))
async def export_count(
    request: Request, _signed_in: SignedInAdmin, database: DatabaseDep, pseudonyms: PseudonymsDep
) -> HTMLResponse:
    """The count alone, which the preview loads once shown (see `export_form.preview`)."""
    choice = ExportChoice.from_form(dict(request.query_params))
    counted = await count_users(database, choice, pseudonyms=pseudonyms)
    return page(request, "export_count.html", {"count": counted})


# The downloads: the API's handlers, so the bytes, headers, limits and audit record
# are the API's; only the credential differs (the session instead of a token).


@router.get(
    "/download/export",
    dependencies=[
        Depends(track_export, scope="function"),
        Depends(require_feature("users:export")),
    ],
)
async def download_export(
    attempt: TrackedExport,
    database: DatabaseDep,
    admission: AdmissionDep,
    settings: AppSettings,
    principal: ConsoleExporter,
    parameters: Annotated[ExportParameters, Query()],
    pseudonyms: PseudonymsDep,
    _no_fields: Annotated[None, Depends(refuse_fields_on_minimal)] = None,
) -> Response:
    return await export_users(
        attempt=attempt,
        database=database,
        admission=admission,
        settings=settings,
        principal=principal,
        parameters=parameters,
        pseudonyms=pseudonyms,
    )


@router.get(
    "/download/export-full",
    dependencies=[
        Depends(track_export, scope="function"),
        Depends(require_feature("users:export_full")),
    ],
)
async def download_export_full(
    attempt: TrackedExport,
    database: DatabaseDep,
    admission: AdmissionDep,
    settings: AppSettings,
    principal: ConsoleExporter,
    parameters: Annotated[FullExportParameters, Query()],
    pseudonyms: PseudonymsDep,
) -> Response:
    return await export_users_full(
        attempt=attempt,
        database=database,
        admission=admission,
        settings=settings,
        principal=principal,
        parameters=parameters,
        since=None,
        pseudonyms=pseudonyms,
    )
