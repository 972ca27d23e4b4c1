"""The operator console at /console: server-rendered pages over the API's own services."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from reviewpoint.console.audit_page import router as audit_router
from reviewpoint.console.deps import SIGN_IN_PATH, SignInRequired
from reviewpoint.console.flags_page import router as flags_router
from reviewpoint.console.headers import ConsoleHeadersMiddleware
from reviewpoint.console.keys import router as keys_router
from reviewpoint.console.router import router
from reviewpoint.console.users_page import router as users_router

STATIC = Path(__file__).parent / "static"


async def _to_sign_in(request: Request, exc: Exception) -> Response:
    """No session: a page goes to the sign-in form; an htmx fragment asks htmx to go there."""
    if request.headers.get("hx-request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": SIGN_IN_PATH})
    return RedirectResponse(SIGN_IN_PATH, status_code=303)


def install(app: FastAPI) -> None:
    """The console's routes, its static files and the headers every one of its responses carries."""
    app.include_router(router)
    app.include_router(keys_router)
    app.include_router(audit_router)
    app.include_router(flags_router)
    app.include_router(users_router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(SignInRequired, _to_sign_in)
    app.add_middleware(ConsoleHeadersMiddleware)
