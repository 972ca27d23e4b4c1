"""`GET /metrics`: the Prometheus text exposition, for the monitoring network.

Open by default, like most exporters: it names no user or key, and is meant to
be reachable only from the monitoring network (a proxy or firewall keeps it off
the internet). With `REVIEWPOINT_METRICS_TOKEN` set it also wants that bearer
token (Prometheus: `authorization: {credentials: ...}` in the scrape config).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from reviewpoint.config import AppSettings
from reviewpoint.errors import NotAuthenticated
from reviewpoint.metrics.middleware import METRICS_PATH
from reviewpoint.metrics.registry import CONTENT_TYPE, Metrics

router = APIRouter(tags=["Health"])

_EXAMPLE = (
    "# HELP reviewpoint_exports_total Export calls by endpoint, format and outcome\n"
    "# TYPE reviewpoint_exports_total counter\n"
    'reviewpoint_exports_total{endpoint="export-full",format="csv",outcome="completed"} 3.0\n'
)


@router.get(
    METRICS_PATH,
    summary="Prometheus metrics",
    description=(
        "Prometheus text format, added up over every worker process. No authentication "
        "unless `REVIEWPOINT_METRICS_TOKEN` is set (then `Authorization: Bearer <token>`); "
        "absent (404) when `REVIEWPOINT_METRICS=false`."
    ),
    response_class=Response,
    responses={
        200: {"description": "Metrics", "content": {CONTENT_TYPE: {"example": _EXAMPLE}}},
        401: {"description": "`REVIEWPOINT_METRICS_TOKEN` is set and the bearer token is not it"},
    },
)
def metrics(
    request: Request,
    settings: AppSettings,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    # A plain function: FastAPI runs it in a thread, so reading the workers'
    # files never blocks the event loop.
    if settings.metrics_token is not None:
        scheme, _, token = (authorization or "").partition(" ")
        expected = settings.metrics_token.get_secret_value()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()
        ):
            raise NotAuthenticated(
                "Missing or wrong metrics token",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    collected: Metrics = request.app.state.metrics
    return Response(collected.exposition(), media_type=CONTENT_TYPE)
