"""The query parameters of the two exports, documented for the OpenAPI schema."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from reviewpoint.errors import BadRequest
from reviewpoint.exports import cursor
from reviewpoint.exports.anonymize import AnonymizeMode, Pseudonyms
from reviewpoint.exports.columns import CHOOSABLE, ExportSpec, choose_fields
from reviewpoint.exports.formats import FORMATS, check_options, format_named
from reviewpoint.exports.formats.base import Options
from reviewpoint.exports.limits import NO_LIMITS, KeyLimits
from reviewpoint.exports.query import Filters
from reviewpoint.exports.request import ExportRequest
from reviewpoint.inputs import INT32_MAX

TIMESTAMP_RULE = (
    "an ISO 8601 timestamp with a time zone, such as 2025-01-08T10:30:00Z "
    "(in a URL, write + as %2B)"
)


def _iso_timestamp(value: object) -> object:
    """Only ISO 8601 with a zone: pydantic alone would also take bare numbers as Unix times."""
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be {TIMESTAMP_RULE}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"has no time zone; it must be {TIMESTAMP_RULE}")
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    return parsed


Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_timestamp)]


def _any_case(names: Iterable[str]) -> str:
    """A pattern for one of `names` in any ASCII case (JSON Schema patterns have no flags)."""
    spelled = ("".join(f"[{c.lower()}{c.upper()}]" for c in name) for name in names)
    return f"^({'|'.join(spelled)})$"


# Every spelling of a boolean pydantic reads, in any case, as the other flags take them.
_BOOLEAN_SPELLINGS = ("0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes")


def _anonymize_spellings(schema: dict[str, Any]) -> None:
    schema.pop("enum", None)
    schema["pattern"] = f"^\\s*{_any_case(['day'])[1:-1]}\\s*$|{_any_case(_BOOLEAN_SPELLINGS)}"


def _name_list(names: Iterable[str]) -> str:
    """A pattern for a comma-separated list of `names`, blanks around each allowed."""
    one = f"\\s*({'|'.join(names)})\\s*"
    return f"^{one}(,{one})*$"


_BOOLEAN = TypeAdapter(bool)


def anonymize_mode(value: object) -> object:
    """`day`, or any spelling of a boolean the other parameters take (`true`, `1`, `off`...)."""
    if isinstance(value, str) and value.strip().lower() == "day":
        return "day"
    try:
        return "true" if _BOOLEAN.validate_python(value) else "false"
    except ValidationError:
        raise ValueError("must be true, false or day") from None


def _parameter(*, default: Any, description: str, example: object, **constraints: Any) -> Any:
    """A documented query parameter: its example shown both in its schema and beside it."""
    return Query(
        default=default,
        description=description,
        examples=[example],
        openapi_examples={"example": {"value": example}},
        **constraints,
    )


class ExportParameters(BaseModel):
    """What both exports accept: a format, its options, and filters applied in SQL."""

    format: str = _parameter(
        default="csv",
        description=(
            f"Case-insensitive: {', '.join(f'`{name}`' for name in FORMATS)}. "
            "Anything else is a 400 listing them."
        ),
        # CSV: the only format every option's example (`bom`, `excel_safe`) applies to.
        example="csv",
        # In the schema only: the check stays format_named's 400 that lists the formats.
        json_schema_extra={"pattern": _any_case(FORMATS)},
    )
    email: str | None = _parameter(
        default=None,
        description="Only the user with this address (ASCII letters case-insensitive).",
        example="john@example.com",
    )
    is_active: bool | None = _parameter(
        default=None,
        description="Only active (`true`) or inactive (`false`) users.",
        example=True,
    )
    is_admin: bool | None = _parameter(
        default=None,
        description="Only administrators (`true`) or only others (`false`).",
        example=False,
    )
    created_after: Timestamp | None = _parameter(
        default=None,
        description=f"Only users created strictly after this moment: {TIMESTAMP_RULE}.",
        example="2025-01-01T00:00:00Z",
    )
    created_before: Timestamp | None = _parameter(
        default=None,
        description=f"Only users created strictly before this moment: {TIMESTAMP_RULE}.",
        example="2026-01-01T00:00:00+01:00",
    )
    updated_since: Timestamp | None = _parameter(
        default=None,
        description=f"Only users updated at or after this moment: {TIMESTAMP_RULE}.",
        example="2025-06-01T00:00:00Z",
    )
    after_id: int | None = _parameter(
        default=None,
        ge=0,
        le=INT32_MAX,
        description=(
            "Only users with a larger id: pass the last id received to resume an export "
            "that was cut off (records come in id order)."
        ),
        example=12345,
    )
    limit: int | None = _parameter(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="At most this many records, the first in id order (a sample or preview).",
        example=10,
    )
    bom: bool = _parameter(
        default=False,
        description=(
            "CSV only: start with a UTF-8 byte-order mark, so Excel reads the file as "
            "UTF-8. `true` with another format is a 400."
        ),
        example=True,
    )
    excel_safe: bool = _parameter(
        default=True,
        description=(
            "CSV only: prefix text cells starting with `=`, `+`, `-`, `@`, tab, CR or NUL "
            "with `'`, so spreadsheets do not run them as formulas. `false` turns this "
            "off for machine consumers; `false` with another format is a 400 (JSON and "
            "XLSX never need it)."
        ),
        example=False,
    )

    anonymize: AnonymizeMode = _parameter(
        default="false",
        # What `anonymize_mode` takes, not only the three values it returns.
        json_schema_extra=_anonymize_spellings,
        description=(
            "`true`: emails and names become deterministic pseudonyms "
            "(`u-<hex>@example.invalid`, `User <hex>`; the same for a user in every "
            "export made with this server's key); ids, flags and timestamps stay. "
            "`day`: as `true`, and every timestamp is cut to its day (00:00:00Z). "
            "Feature flag `users:export_anonymized`. Anything else is a 422."
        ),
        example="true",
    )

    # A validator of the field, not of its type: FastAPI keeps the Query's
    # examples only on a plain annotation.
    _anonymize_mode = field_validator("anonymize", mode="before")(anonymize_mode)

    def export_request(
        self,
        spec: ExportSpec,
        *,
        since: int | None = None,
        pseudonyms: Pseudonyms | None = None,
        limits: KeyLimits = NO_LIMITS,
    ) -> ExportRequest:
        """The export these parameters ask for, or a 400 for a format or option it cannot serve.

        `since`: an incremental sync's change number (`cursor.py`). `pseudonyms`:
        the key and permission `anonymize` needs (403/503 without them).
        `limits`: the caller's key's data limits (`limits.py`), a 403 for
        anything beyond them.
        """
        export_format = format_named(self.format)
        options = Options(bom=self.bom, excel_safe=self.excel_safe)
        check_options(export_format, options)
        spec = self.columns(spec, limits)
        if since is not None:
            spec = cursor.with_deletions(spec)
        limits.check_email_filter(self.email)
        mode = limits.anonymize_mode(self.anonymize, explicit="anonymize" in self.model_fields_set)
        filters = Filters(
            email=self.email,
            is_active=self.is_active,
            is_admin=self.is_admin,
            created_after=self.created_after,
            created_before=self.created_before,
            updated_since=self.updated_since,
            after_id=self.after_id or 0,
            limit=self.limit,
            since=since,
        )
        anonymization = (pseudonyms or Pseudonyms(key=None, enabled=False)).anonymization(mode)
        return ExportRequest(
            spec=spec,
            format=export_format,
            filters=filters,
            options=options,
            view=limits.view,
            anonymization=anonymization,
        )

    def columns(self, spec: ExportSpec, limits: KeyLimits) -> ExportSpec:
        """The columns exported: the endpoint's own, all of which the key must be allowed."""
        limits.check_columns(spec)
        return spec


class FullExportParameters(ExportParameters):
    fields: str | None = _parameter(
        default=None,
        description=(
            "Comma-separated columns, in the order wanted, from: "
            f"{', '.join(f'`{name}`' for name in CHOOSABLE)}. An unknown or repeated "
            "name is a 400. Default: every column but `last_login_at` and `is_deleted` "
            "(with `cursor`, `is_deleted` is added last unless chosen)."
        ),
        example="id,email,created_at",
        # In the schema only, as for `format`; a repeated name is a 400 it cannot express.
        json_schema_extra={"pattern": _name_list(CHOOSABLE)},
    )

    def columns(self, spec: ExportSpec, limits: KeyLimits) -> ExportSpec:
        """The chosen `fields` (each one the key must be allowed), or the defaults it may see."""
        if self.fields is None:
            return limits.narrow(spec)
        chosen = choose_fields(spec, self.fields)
        limits.check_columns(chosen)
        return chosen


def refuse_fields_on_minimal(
    fields: Annotated[
        str | None,
        Query(
            description="Not accepted here (400): the minimal export always has "
            "`id,email,name`; `fields` is on `/export-full`.",
            examples=["id,email"],
            openapi_examples={"example": {"value": "id,email"}},
        ),
    ] = None,
) -> None:
    """Route dependency of the minimal export: a column choice it would silently ignore
    is refused, as an unknown format is."""
    if fields is not None:
        raise BadRequest(
            "fields is accepted only by /api/v1/users/export-full "
            "(the minimal export always has id,email,name)"
        )
