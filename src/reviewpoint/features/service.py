"""Admins' overrides of feature flags: read, set, reset, and the history of changes.

Every write happens in the caller's session (an admin's request or a CLI
command) and adds one `feature_flag_changes` row in the same transaction, so a
change is never applied without its record. Old and new values in that record
are effective values: what the flag was and became, override or not.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint.config import Settings
from reviewpoint.db import utcnow
from reviewpoint.errors import Conflict
from reviewpoint.features.catalog import FEATURES, known
from reviewpoint.features.defaults import EnvDefault, env_default
from reviewpoint.features.models import CHANGED_BY_MAX_LENGTH, FeatureFlag, FeatureFlagChange
from reviewpoint.users.models import User

Source = Literal["override", "environment", "default"]
Action = Literal["enable", "disable", "reset"]


@dataclass(frozen=True)
class ChangedBy:
    """Who makes a change, as the records name them."""

    id: int | None
    label: str

    @classmethod
    def admin(cls, user: User) -> ChangedBy:
        return cls(user.id, user.email)

    @classmethod
    def cli(cls) -> ChangedBy:
        """The operator at a shell: no account, so their OS user name."""
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # a uid with no passwd entry, as in some containers
            name = f"uid{os.getuid()}"
        return cls(None, f"cli:{name}"[:CHANGED_BY_MAX_LENGTH])


@dataclass(frozen=True)
class Override:
    enabled: bool
    changed_by: str
    changed_at: datetime


@dataclass(frozen=True)
class FlagState:
    """A flag as served: the override if there is one, else its environment default."""

    name: str
    enabled: bool
    source: Source
    default: bool
    changed_by: str | None = None
    changed_at: datetime | None = None

    @classmethod
    def of(cls, name: str, default: EnvDefault, override: Override | None) -> FlagState:
        if override is None:
            return cls(name, default.enabled, default.source, default.enabled)
        return cls(
            name,
            override.enabled,
            "override",
            default.enabled,
            override.changed_by,
            override.changed_at,
        )


async def load_overrides(session: AsyncSession) -> dict[str, Override]:
    """Every override of a known flag (a row left by a flag since removed is ignored)."""
    rows = await session.scalars(select(FeatureFlag))
    return {
        row.name: Override(row.enabled, row.changed_by, row.changed_at)
        for row in rows
        if row.name in FEATURES
    }


async def list_states(session: AsyncSession, *, settings: Settings) -> list[FlagState]:
    overrides = await load_overrides(session)
    return [
        FlagState.of(name, env_default(settings, name), overrides.get(name)) for name in FEATURES
    ]


async def set_override(
    session: AsyncSession, *, settings: Settings, name: str, enabled: bool, by: ChangedBy
) -> FlagState:
    """Pin `name` to `enabled` whatever the environment says; the same value again is a no-op."""
    default = env_default(settings, known(name))
    row = await _locked(session, name)
    if row is not None and row.enabled == enabled:
        return FlagState.of(name, default, Override(row.enabled, row.changed_by, row.changed_at))
    old = row.enabled if row is not None else default.enabled
    if row is None:
        row = FeatureFlag(name=name)
        session.add(row)
    now = utcnow()
    row.enabled, row.changed_by_id, row.changed_by, row.changed_at = enabled, by.id, by.label, now
    _record(session, name, "enable" if enabled else "disable", old, enabled, by, now)
    try:
        await session.flush()
    except IntegrityError:
        # Another transaction created this override between our read and our insert.
        raise Conflict(f"Feature '{name}' was changed at the same moment; retry") from None
    return FlagState.of(name, default, Override(enabled, by.label, now))


async def reset(
    session: AsyncSession, *, settings: Settings, name: str, by: ChangedBy
) -> FlagState:
    """Drop the override of `name`: its environment default applies again."""
    default = env_default(settings, known(name))
    row = await _locked(session, name)
    if row is not None:
        _record(session, name, "reset", row.enabled, default.enabled, by, utcnow())
        await session.delete(row)
        await session.flush()
    return FlagState.of(name, default, None)


async def list_changes(
    session: AsyncSession, *, offset: int, limit: int
) -> tuple[Sequence[FeatureFlagChange], int]:
    """Newest first; the id breaks ties between changes made in the same microsecond."""
    page = await session.scalars(
        select(FeatureFlagChange)
        .order_by(FeatureFlagChange.changed_at.desc(), FeatureFlagChange.id.desc())
        .offset(offset)
        .limit(limit)
    )
    count = await session.scalar(select(func.count()).select_from(FeatureFlagChange))
    return page.all(), count or 0


async def _locked(session: AsyncSession, name: str) -> FeatureFlag | None:
    # PostgreSQL: a second writer waits here until the first commits, then reads
    # its value, so each record's `old_enabled` is what the flag really was.
    # SQLite request transactions begin IMMEDIATE, which serialises writers already.
    return await session.get(FeatureFlag, name, with_for_update=True)


def _record(
    session: AsyncSession,
    name: str,
    action: Action,
    old: bool,
    new: bool,
    by: ChangedBy,
    at: datetime,
) -> None:
    session.add(
        FeatureFlagChange(
            name=name,
            action=action,
            old_enabled=old,
            new_enabled=new,
            changed_by_id=by.id,
            changed_by=by.label,
            changed_at=at,
        )
    )
