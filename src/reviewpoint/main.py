"""The application: engines for its lifetime, middleware, routers, one error handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from reviewpoint import __version__, console
from reviewpoint.admission.gate import Admission
from reviewpoint.api_keys.router import router as api_keys_router
from reviewpoint.audit import service as audit
from reviewpoint.audit.observer import AuditObserver
from reviewpoint.audit.router import router as audit_router
from reviewpoint.auth.router import router as auth_router
from reviewpoint.body_limit import BodyLimitMiddleware
from reviewpoint.cache_control import NoStoreMiddleware
from reviewpoint.compression import GzipWhenAccepted
from reviewpoint.config import Settings, load_settings, signing_secret
from reviewpoint.db import Database
from reviewpoint.errors import install_error_handlers
from reviewpoint.exports import anonymize
from reviewpoint.exports.router import router as exports_router
from reviewpoint.features.flags import FeatureFlags
from reviewpoint.features.router import router as features_router
from reviewpoint.health import router as health_router
from reviewpoint.inputs import NulGuardMiddleware
from reviewpoint.logs import configure_logging
from reviewpoint.methods import AllowedMethodsMiddleware
from reviewpoint.metrics.middleware import RequestMetricsMiddleware
from reviewpoint.metrics.observer import ExportMetrics
from reviewpoint.metrics.registry import Metrics
from reviewpoint.metrics.router import router as metrics_router
from reviewpoint.openapi import install as document_failures
from reviewpoint.request_id import RequestIdMiddleware
from reviewpoint.users.router import router as users_router


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; with no settings, read them from the environment (uvicorn's factory)."""
    settings = settings or load_settings()
    jwt_secret = signing_secret(settings)  # before anything else: no key, no app
    configure_logging(settings.log_level, settings.log_format)
    pseudonym_key = anonymize.pseudonym_key(settings)  # likewise, while the feature is on
    metrics = Metrics() if settings.metrics else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        app.state.database = database
        app.state.admission = Admission(
            settings, on_refusal=metrics.rejected if metrics is not None else None
        )
        audit_trail = AuditObserver(
            database, on_failure=metrics.audit_write_failed if metrics is not None else None
        )
        # Told how every export call ends (exports/attempt.py): the trail, then metrics.
        app.state.export_observers = [audit_trail]
        if metrics is not None:
            app.state.export_observers.append(ExportMetrics(metrics))
        # In the background: start-up never waits on the database.
        database.spawn_once(
            "audit-interrupted", lambda: audit.fail_interrupted_at_startup(database, settings)
        )
        features = FeatureFlags(settings, database)
        app.state.features = features
        try:
            await features.start()
            yield
        finally:
            await features.close()
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
    app.state.pseudonym_key = pseudonym_key
    app.state.metrics = metrics
    # The last added runs first: no-store and request ids also mark the 413s and
    # 422s the two guards answer before any route or credential check. gzip is
    # innermost: it holds back the response start until the first body, then
    # the others add their headers to the start it sends. OPTIONS and 405s for a
    # whole path are answered innermost, so they carry the others' headers too.
    app.add_middleware(AllowedMethodsMiddleware, routes=app.router.routes)
    app.add_middleware(GzipWhenAccepted)
    app.add_middleware(NulGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(NoStoreMiddleware)
    # The operator console's pages, static files and their security headers.
    console.install(app)
    if metrics is not None:
        # Outermost: it counts the statuses clients get, RequestIdMiddleware's 500s too.
        app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
        app.include_router(metrics_router)
    install_error_handlers(app)
    # Exports first: their fixed paths must win over /users/{id}.
    for router in (
        health_router,
        auth_router,
        exports_router,
        users_router,
        api_keys_router,
        features_router,
        audit_router,
    ):
        app.include_router(router)
    # /openapi.json: the 503s, 413s, 422s and error bodies any route of a kind can answer.
    document_failures(app)
    return app
