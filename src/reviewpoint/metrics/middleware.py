"""HTTP request metrics, per route template.

Pure ASGI (not BaseHTTPMiddleware) so streamed bodies pass straight through.
A request is counted, with the status it was sent, when its response starts;
its duration is observed when the body ends, however it ends (completed, or
broken off by an error, a timeout or the client). So a streamed export that
fails mid-way counts here as the 200 its client received, and in
`reviewpoint_exports_total` as `failed`.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reviewpoint.metrics.registry import Metrics

METRICS_PATH = "/metrics"
# Every request no route handled is one label value, so scanners probing
# thousands of paths add one series, not thousands.
UNMATCHED_ROUTE = "unmatched"
# Any other method a client invents is counted as "other", for the same reason.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts and times every HTTP request but the scrapes themselves.

    Scrapes are left out so that two scrapes in a row agree, whichever worker
    answers them.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in METHODS else "other"
        # The route is known once the response starts; the duration is observed once.
        timing: str | None = None

        def observe_duration() -> None:
            nonlocal timing
            if timing is not None:
                self.metrics.http_seconds.labels(route=timing, method=method).observe(
                    time.perf_counter() - started
                )
                timing = None

        async def send_and_count(message: Message) -> None:
            nonlocal timing
            if message["type"] == "http.response.start":
                timing = route_template(scope)
                self.metrics.http_requests.labels(
                    route=timing, method=method, status=str(message["status"])
                ).inc()
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                observe_duration()

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            observe_duration()  # a body that broke off before its last message


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/api/v1/users/{user_id}`), never the raw path.

    The router records the route in the scope; a request answered before
    routing (unknown path; a 413 or NUL-guard 422 from the middlewares) has none.
    """
    path = getattr(scope.get("route"), "path_format", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
