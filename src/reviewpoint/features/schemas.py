from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reviewpoint.inputs import InputModel


class FeatureUpdate(InputModel):
    enabled: bool = Field(description="The value to serve, whatever the environment says.")


class FeaturePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    enabled: bool = Field(description="What the workers serve (within the refresh interval).")
    source: Literal["override", "environment", "default"] = Field(
        description="`override`: an admin's value in the database; `environment`: a "
        "REVIEWPOINT_FEATURE* setting; `default`: nothing set, on."
    )
    default: bool = Field(description="The value without an override (environment or default).")
    changed_by: str | None = Field(description="Who set the override: an email or `cli:<user>`.")
    changed_at: datetime | None = Field(description="When the override was set.")


class FeatureChangePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    action: Literal["enable", "disable", "reset"]
    old_enabled: bool = Field(description="The effective value before the change.")
    new_enabled: bool = Field(description="The effective value after it.")
    changed_by_id: int | None = Field(description="The admin's user id; null from the CLI.")
    changed_by: str
    changed_at: datetime


class FeatureChangesPublic(BaseModel):
    data: list[FeatureChangePublic]
    count: int
