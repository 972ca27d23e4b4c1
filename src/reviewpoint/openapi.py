"""The failures /openapi.json documents for every operation, derived from its route.

Each route declares the answers of its own logic (404, 409, ...). Some come from
what a route is built on instead: any route that reads the database answers 503
while it is down or busy, any route that takes a body answers 413 to one over
REVIEWPOINT_MAX_BODY_BYTES, and any route 422 to a NUL in its path or query
(which free-form string parameters state as their pattern). Derived from each
route's dependencies and body, a new route documents them without anyone
remembering to; the schema fuzzing checks every status against the document
(tests/contract/). Every 429 and 503 documents its `Retry-After`, and every
error but 422 the `{"detail": "..."}` body they all have.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from reviewpoint.admission.gate import get_admission
from reviewpoint.db import get_database
from reviewpoint.inputs import NO_NUL_PATTERN

ERROR_SCHEMA = "ErrorDetail"
_ERROR_BODY = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the request again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_UNAVAILABLE = (
    "The database cannot be reached, is busy settling a conflict, or no connection "
    "came free in time: nothing was done; retry after `Retry-After` seconds"
)
_STORE_UNAVAILABLE = " (also `Rate limit store unavailable`: the rate-limit store is down)"
_TOO_LARGE = "The request body is over `REVIEWPOINT_MAX_BODY_BYTES` (default 1 MiB)"
# inputs.NulGuardMiddleware answers it on every path, before routing.
_NUL = {
    "description": "A NUL character in the path or the query string: `detail` names where",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
    },
}


def install(app: FastAPI) -> None:
    """Add the derived failures to the app's document, once, when it is first built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_failures(app, build())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_failures(app: FastAPI, document: dict[str, Any]) -> None:
    """Complete `document`, the one FastAPI built from `app`'s routes, in place."""
    document.setdefault("components", {}).setdefault("schemas", {})[ERROR_SCHEMA] = {
        "title": ERROR_SCHEMA,
        "type": "object",
        "properties": {"detail": {"type": "string", "title": "Detail"}},
        "required": ["detail"],
    }
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            _document_route_failures(route, operation["responses"])
            for parameter in operation.get("parameters", ()):
                if parameter["in"] in ("path", "query"):
                    _refuse_nul(parameter["schema"])


def _document_route_failures(route: RouteContext, responses: dict[str, Any]) -> None:
    if _depends_on(route.dependant, get_database):
        store = _STORE_UNAVAILABLE if _depends_on(route.dependant, get_admission) else ""
        responses.setdefault("503", {"description": _UNAVAILABLE + store})
    if route.body_field is not None:
        responses.setdefault("413", {"description": _TOO_LARGE})
    responses.setdefault("422", _NUL)
    for status, response in responses.items():
        if status in ("429", "503"):
            response.setdefault("headers", {}).update(_RETRY_AFTER)
        if status[0] in "45" and status != "422":
            response.setdefault("content", _ERROR_BODY)


def _refuse_nul(schema: dict[str, Any]) -> None:
    """State the NUL guard's rule on a free-form string parameter, so a client (and
    the fuzzing's positive data) knows a NUL in it is refused."""
    if schema.keys() & {"pattern", "format", "enum"}:
        return  # a rule of its own, which excludes NUL already
    for branch in schema.get("anyOf", ()):
        _refuse_nul(branch)
    if schema.get("type") == "string":
        schema["pattern"] = NO_NUL_PATTERN


def _depends_on(dependant: Dependant, call: object) -> bool:
    return any(
        dependency.call is call or _depends_on(dependency, call)
        for dependency in dependant.dependencies
    )
