"""Admins read and override feature flags over HTTP (the CLI does the same)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from reviewpoint.auth.deps import BEARER_ERRORS, CurrentAdmin
from reviewpoint.config import AppSettings
from reviewpoint.db import Session
from reviewpoint.features import service
from reviewpoint.features.catalog import known
from reviewpoint.features.flags import FeatureFlagsDep
from reviewpoint.features.schemas import (
    FeatureChangePublic,
    FeatureChangesPublic,
    FeaturePublic,
    FeatureUpdate,
)
from reviewpoint.features.service import ChangedBy
from reviewpoint.inputs import PageOffset

router = APIRouter(
    prefix="/api/v1/features",
    tags=["Feature flags"],
    responses=BEARER_ERRORS,
)

FeatureName = Annotated[str, Depends(known)]
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such feature; the detail lists the known ones"}
}


@router.get(
    "",
    description="Every flag: what it is now, where that comes from (an admin's `override`, "
    "the `environment`, or the `default`: on), and who set the override when. Read from "
    "the database: every worker serves the same within `REVIEWPOINT_FEATURE_REFRESH_SECONDS`.",
)
async def list_features(
    session: Session, admin: CurrentAdmin, settings: AppSettings
) -> list[FeaturePublic]:
    states = await service.list_states(session, settings=settings)
    return [FeaturePublic.model_validate(state) for state in states]


@router.get("/changes", description="Every change of an override, newest first.")
async def list_feature_changes(
    session: Session,
    admin: CurrentAdmin,
    offset: PageOffset = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FeatureChangesPublic:
    page, count = await service.list_changes(session, offset=offset, limit=limit)
    return FeatureChangesPublic(
        data=[FeatureChangePublic.model_validate(change) for change in page], count=count
    )


@router.put(
    "/{name}",
    description="Override the flag's environment default. This worker serves the new value "
    "at once, the others within `REVIEWPOINT_FEATURE_REFRESH_SECONDS`. Setting the value "
    "the override already has changes and records nothing.",
    responses={**_UNKNOWN, 409: {"description": "Changed by someone else at the same moment"}},
)
async def set_feature(
    admin: CurrentAdmin,
    name: FeatureName,
    data: FeatureUpdate,
    settings: AppSettings,
    flags: FeatureFlagsDep,
) -> FeaturePublic:
    state = await flags.change(
        lambda session: service.set_override(
            session, settings=settings, name=name, enabled=data.enabled, by=ChangedBy.admin(admin)
        )
    )
    return FeaturePublic.model_validate(state)


@router.delete(
    "/{name}",
    description="Drop the override: the environment default applies again (answered). "
    "A flag without an override is left as it is and nothing is recorded.",
    responses=_UNKNOWN,
)
async def reset_feature(
    admin: CurrentAdmin, name: FeatureName, settings: AppSettings, flags: FeatureFlagsDep
) -> FeaturePublic:
    state = await flags.change(
        lambda session: service.reset(
            session, settings=settings, name=name, by=ChangedBy.admin(admin)
        )
    )
    return FeaturePublic.model_validate(state)
