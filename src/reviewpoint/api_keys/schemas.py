from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from reviewpoint.exports.columns import CHOOSABLE
from reviewpoint.exports.limits import field_names
from reviewpoint.inputs import InputModel

Scope = Literal["users:export", "users:export_full"]
SCOPES: tuple[Scope, ...] = ("users:export", "users:export_full")
# How long a rotated key keeps working unless told otherwise, and at most (a week).
DEFAULT_GRACE_MINUTES = 60
MAX_GRACE_MINUTES = 7 * 24 * 60


FIELDS_DESCRIPTION = (
    "The export columns the key may receive, from: "
    f"{', '.join(CHOOSABLE)}. Exports through it hold only these (by default the "
    "usual columns among them); asking for another is a 403. Null: no limit."
)
ANONYMIZED_ONLY_DESCRIPTION = (
    "Exports through the key always carry pseudonyms instead of real emails and names "
    "(`anonymize` defaults to `true`; `false` and the `email` filter are a 403)."
)


class ApiKeyCreate(InputModel):
    name: str = Field(min_length=1, max_length=128)
    scopes: list[Scope] = Field(min_length=1)
    expires_in_days: int | None = Field(default=None, gt=0, le=3650)
    fields: list[str] | None = Field(
        default=None,
        description=FIELDS_DESCRIPTION,
        examples=[["id", "name", "created_at"]],
        # What `_known_fields` enforces, said in the schema (it checks, with its message).
        # Names as written: the blanks it also strips (for the CLI's "id, email") stay
        # out of the schema, or two spellings of one name would pass `uniqueItems`.
        json_schema_extra={
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": f"^({'|'.join(CHOOSABLE)})$"},
        },
    )
    anonymized_only: bool = Field(default=False, description=ANONYMIZED_ONLY_DESCRIPTION)

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str] | None) -> list[str] | None:
        # Unknown or repeated names are a 422 naming them, never stored.
        return None if value is None else field_names(value)


class ApiKeyRotate(InputModel):
    grace_minutes: int = Field(
        default=DEFAULT_GRACE_MINUTES,
        ge=0,
        le=MAX_GRACE_MINUTES,
        description="How long the old secret keeps working; 0 stops it at once.",
    )


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_by: int | None = Field(
        description="The admin who issued the key; null for keys made with the CLI."
    )
    created_by_email: str | None = Field(description="That admin's email, when known.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Kept to the minute.")
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from_id: int | None = Field(description="The key this one replaced by rotation.")
    fields: list[str] | None = Field(
        validation_alias=AliasChoices("allowed_fields", "fields"),
        description="The export columns the key may receive; null: no limit.",
    )
    anonymized_only: bool = Field(description=ANONYMIZED_ONLY_DESCRIPTION)

    @field_validator("fields", mode="before")
    @classmethod
    def _split_fields(cls, value: object) -> object:
        # Stored comma-separated (api_keys.allowed_fields).
        return value.split(",") if isinstance(value, str) else value

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # Stored space-separated, as in OAuth2 scope strings.
        return value.split() if isinstance(value, str) else value


class ApiKeyCreated(ApiKeyPublic):
    """Returned once, at creation or rotation: the secret is never stored or shown again."""

    secret: str
