"""The application: engines for its lifetime, middleware, routers, one error handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from reviewpoint import __version__
from reviewpoint.admission.gate import Admission
from reviewpoint.api_keys.router import router as api_keys_router
from reviewpoint.audit import service as audit
from reviewpoint.audit.observer import AuditObserver
from reviewpoint.audit.router import router as audit_router
from reviewpoint.auth.router import router as auth_router
from reviewpoint.body_limit import BodyLimitMiddleware
from reviewpoint.cache_control import NoStoreMiddleware
from reviewpoint.config import Settings, load_settings, signing_secret
from reviewpoint.db import Database
from reviewpoint.errors import install_error_handlers
from reviewpoint.exports.router import router as exports_router
from reviewpoint.health import router as health_router
from reviewpoint.inputs import NulGuardMiddleware
from reviewpoint.request_id import RequestIdMiddleware, configure_logging
from reviewpoint.users.router import router as users_router


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; with no settings, read them from the environment (uvicorn's factory)."""
    settings = settings or load_settings()
    jwt_secret = signing_secret(settings)  # before anything else: no key, no app
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        app.state.database = database
        app.state.admission = Admission(settings)
        audit_trail = AuditObserver(database)
        # A list: every observer is told how each export attempt ended.
        app.state.export_observers = [audit_trail]
        # In the background: start-up never waits on the database.
        database.spawn_once(
            "audit-interrupted", lambda: audit.fail_interrupted_at_startup(database, settings)
        )
        try:
            yield
        finally:
            await audit_trail.close()
            await app.state.admission.close()
            await database.dispose()

    # Swagger UI and ReDoc assets come from the fastapi-offline package, so /docs
    # and /redoc work without internet access.
    app: FastAPI = FastAPIOffline(
        title="ReViewPoint user export service",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.jwt_secret = jwt_secret
    # The last added runs first: no-store and request ids also mark the 413s and
    # 422s the two guards answer before any route or credential check.
    app.add_middleware(NulGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(NoStoreMiddleware)
    install_error_handlers(app)
    # Exports first: their fixed paths must win over /users/{id}.
    for router in (
        health_router,
        auth_router,
        exports_router,
        users_router,
        api_keys_router,
        audit_router,
    ):
        app.include_router(router)
    return app
