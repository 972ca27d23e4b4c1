"""Client input the databases cannot hold is refused at the edge, as a 422 naming it.

- NUL: PostgreSQL text cannot store it (asyncpg raised, which surfaced as a 500
  or, in an export, a 503), so both databases refuse it alike: in the URL (path
  and every query parameter) by `NulGuardMiddleware`, in JSON bodies by
  `InputModel`, the base of every request schema.
- Integers: ids and offsets go to 32-bit signed parameters (PostgreSQL
  `integer`); a larger one failed in the driver. `RowId` and `PageOffset` bound
  them.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from reviewpoint.errors import validation_error_response

INT32_MAX = 2**31 - 1
NUL_MESSAGE = "must not contain NUL characters"

RowId = Annotated[int, Path(ge=1, le=INT32_MAX)]
PageOffset = Annotated[int, Query(ge=0, le=INT32_MAX)]


class InputModel(BaseModel):
    """Base of every JSON request body: unknown fields, NUL in any string field and a
    value of another JSON type than the schema says are 422.

    Strict: pydantic's lax mode took `0` for `false`, `false` for `0` and `"30"` for
    `30`, so bodies the OpenAPI schema calls invalid were accepted (schema fuzzing
    found `{"anonymized_only": 0}` and `{"grace_minutes": false}` creating keys).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    # "before": NUL is refused with one message, ahead of other checks (an email
    # validator's own complaint would quote the characters it rejects).
    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(NUL_MESSAGE)
        return value


class NulGuardMiddleware:
    """422 for a NUL anywhere in the path or the query string, before routing.

    One check for every route, present and future, instead of a validator on each
    query parameter. Pure ASGI: it never touches bodies or responses.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            errors = _nul_errors(scope)
            if errors:
                await validation_error_response(errors)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_errors(scope: Scope) -> list[dict[str, object]]:
    failed: list[list[str]] = []
    if "\x00" in scope["path"]:
        failed.append(["path"])
    # Decoded as Starlette decodes query parameters, so the names match the API's.
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            failed.append(["query", name])
    return [nul_error(loc) for loc in failed]


def nul_error(loc: list[str]) -> dict[str, object]:
    """The 422 item for a NUL at `loc`, worded as pydantic words it in a JSON body."""
    return {"loc": loc, "msg": f"Value error, {NUL_MESSAGE}", "type": "value_error"}
