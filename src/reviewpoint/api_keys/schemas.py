from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reviewpoint.inputs import InputModel

Scope = Literal["users:export", "users:export_full"]
SCOPES: tuple[Scope, ...] = ("users:export", "users:export_full")


class ApiKeyCreate(InputModel):
    name: str = Field(min_length=1, max_length=128)
    scopes: list[Scope] = Field(min_length=1)
    expires_in_days: int | None = Field(default=None, gt=0, le=3650)


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_by: int | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # Stored space-separated, as in OAuth2 scope strings.
        return value.split() if isinstance(value, str) else value


class ApiKeyCreated(ApiKeyPublic):
    """Returned once, at creation: the secret is never stored or shown again."""

    secret: str
