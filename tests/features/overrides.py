"""Overrides written and read as another worker or the CLI would: through the service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from reviewpoint.config import load_settings
from reviewpoint.db import standalone_session
from reviewpoint.features import service
from reviewpoint.features.models import FeatureFlagChange
from reviewpoint.features.service import ChangedBy
from tests.data import execute_sql

ALIVE = "/api/v1/users/export-alive"
SIMPLE = "/api/v1/users/export-simple"
FEATURES_API = "/api/v1/features"
CHANGES_API = "/api/v1/features/changes"
ELSEWHERE = ChangedBy(None, "cli:elsewhere")


def override(db_url: str, name: str, enabled: bool | None) -> None:
    """Set (True/False) or drop (None) the override of `name`, in a transaction of its own."""
    settings = load_settings(_env_file=None, env="test", db_url=db_url)

    async def run() -> None:
        async with standalone_session(db_url) as session:
            if enabled is None:
                await service.reset(session, settings=settings, name=name, by=ELSEWHERE)
            else:
                await service.set_override(
                    session, settings=settings, name=name, enabled=enabled, by=ELSEWHERE
                )

    asyncio.run(run())


def recorded_changes(db_url: str) -> list[FeatureFlagChange]:
    async def run() -> list[FeatureFlagChange]:
        async with standalone_session(db_url) as session:
            page, _ = await service.list_changes(session, offset=0, limit=1000)
            return list(page)

    return asyncio.run(run())


def hide_overrides_table(db_url: str) -> None:
    """The overrides cannot be read (as before `db upgrade`) until `show_overrides_table`."""
    execute_sql(db_url, "ALTER TABLE feature_flags RENAME TO feature_flags_hidden")


def show_overrides_table(db_url: str) -> None:
    execute_sql(db_url, "ALTER TABLE feature_flags_hidden RENAME TO feature_flags")


@contextmanager
def overrides_table_hidden(db_url: str) -> Iterator[None]:
    hide_overrides_table(db_url)
    try:
        yield
    finally:
        show_overrides_table(db_url)
