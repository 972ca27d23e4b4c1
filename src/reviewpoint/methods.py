"""`OPTIONS` and 405 answered for a path as a whole, with every method it has in `Allow`.

Starlette routes one method per route: a path served by several routes (GET and
POST on /api/v1/users) answered a method it lacks, OPTIONS included, with a 405
whose `Allow` named only the first route's methods, so a client was told
/api/v1/users takes POST alone. RFC 9110 wants `Allow` to list every method the
resource supports. When the router refuses a method (its 405, raised before any
dependency or credential check), this middleware asks every route which
methods it would take at that path and answers instead:

- `OPTIONS`: 204 with that `Allow`; it says which methods exist, nothing of the data.
- any other method: 405 `{"detail": "Method Not Allowed"}` with the same `Allow`.

Requests the router accepts pass untouched and cost nothing extra. Pure ASGI.
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Every method a route here can declare; OPTIONS is this module's, never a route's.
_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


class AllowedMethodsMiddleware:
    def __init__(self, app: ASGIApp, *, routes: list[BaseRoute]) -> None:
        self.app = app
        # The app's own list: routes included after the middleware is added count too.
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def answer_for_the_path(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 405:
                refused = True
                await self._refusal(scope)(scope, receive, send)
                return
            if not refused:
                await send(message)

        await self.app(scope, receive, answer_for_the_path)

    def _refusal(self, scope: Scope) -> Response:
        headers = {"Allow": ", ".join([*allowed_methods(self.routes, scope), "OPTIONS"])}
        if scope["method"] == "OPTIONS":
            return Response(status_code=204, headers=headers)
        return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """Every method a route serves at this scope's path, sorted.

    A fixed path names its own resource: /api/v1/features/changes is GET only,
    though PUT there reaches /api/v1/features/{name} (and its 404 for an
    unknown flag). Routes with path parameters count only where no fixed one matches.
    """
    fixed: list[str] = []
    templated: list[str] = []
    flat = list(_flatten(routes))
    for method in _METHODS:
        probe = {**scope, "method": method}
        for route in flat:
            match, child = route.matches(probe)
            if match == Match.FULL:
                (templated if child.get("path_params") else fixed).append(method)
                break
    return fixed or templated


def _flatten(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    # FastAPI keeps an included router whole (its routes carry the full path),
    # and answers `matches` for it without the path parameters of the route inside.
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _flatten(included.routes)
        else:
            yield route
