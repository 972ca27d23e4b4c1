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

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import parse_qsl

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from reviewpoint.errors import validation_error_response

INT32_MAX = 2**31 - 1
NUL_MESSAGE = "must not contain NUL characters"

# 1 to INT32_MAX in decimal, leading zeros allowed: the ids `isdecimal()` checks
# take, as a JSON Schema pattern (which has no numeric bounds for text).
POSITIVE_INT32_PATTERN = (
    "0*([1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}"
    "|2147[0-3][0-9]{5}|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}"
    "|21474836[0-3][0-9]|214748364[0-7])"
)
RowId = Annotated[int, Path(ge=1, le=INT32_MAX)]
PageOffset = Annotated[int, Query(ge=0, le=INT32_MAX)]


# What `_no_nul` enforces, in the schema of every string without a rule of its own
# (an enum, a format or a pattern already excludes NUL).
NO_NUL_PATTERN = "^[^\\u0000]*$"


def _no_nul_pattern(schema: Any) -> None:
    if isinstance(schema, list):
        for item in schema:
            _no_nul_pattern(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not {"enum", "format", "pattern"} & schema.keys():
        schema["pattern"] = NO_NUL_PATTERN
    for value in schema.values():
        _no_nul_pattern(value)


class InputModel(BaseModel):
    """Base of every JSON request body: unknown fields, NUL in any string field and a
    value of another JSON type than the schema states are 422.

    JSON types: pydantic's lax mode took `0` for `false`, `false` for `0` and `"30"`
    for `30`, so bodies the OpenAPI schema calls invalid were accepted (schema fuzzing
    found `{"anonymized_only": 0}` and `{"grace_minutes": false}` creating keys). Its
    strict mode would refuse `2.0`, which JSON Schema counts as an integer: the check
    below refuses exactly the other JSON types.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_nul_pattern)

    # "before": NUL is refused with one message, ahead of other checks (an email
    # validator's own complaint would quote the characters it rejects).
    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(NUL_MESSAGE)
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _json_type(cls, value: object, info: ValidationInfo) -> object:
        declared = _scalar_types(cls.model_fields[info.field_name or ""].annotation)
        if bool in declared and value is not None and not isinstance(value, bool):
            raise ValueError("must be true or false")
        if int in declared and isinstance(value, bool | str):
            raise ValueError("must be an integer")
        return value


def _scalar_types(annotation: object) -> set[object]:
    """`bool` and `int` among a field's declared types (`int | None` -> {int, None})."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return set(members) if members else {annotation}


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
