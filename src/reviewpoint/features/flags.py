"""What one worker serves: flags read from memory, overrides refreshed in the background.

A flag is read on every export request, so reading it must cost nothing: no
query, no lock, no await. Each worker process keeps the admins' overrides in
memory and re-reads them every `REVIEWPOINT_FEATURE_REFRESH_SECONDS` (one small
query), so a change made through any worker or the CLI reaches every worker
within that interval plus one query. The worker that makes a change applies it
at once.

When the database cannot be read, the last values it gave stay in force (at
start-up: the environment defaults) and the refresh keeps trying: a flag read
never waits for, or fails with, the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from reviewpoint.config import Settings
from reviewpoint.db import Database
from reviewpoint.features import service
from reviewpoint.features.defaults import env_defaults
from reviewpoint.features.service import FlagState, Override

log = logging.getLogger("reviewpoint.features")
# The longest one refresh may take; past it, it counts as failed and the next
# one tries again. Also bounds how long a start-up waits for an unreachable database.
REFRESH_TIMEOUT_SECONDS = 5.0


class FeatureFlags:
    def __init__(self, settings: Settings, database: Database) -> None:
        self._database = database
        self._interval = settings.feature_refresh_seconds
        self._defaults = env_defaults(settings)
        self._overrides: dict[str, Override] = {}
        # Bumped by every local change: a refresh that began before one may have
        # read the database before it was committed, so its result is dropped.
        self._generation = 0
        self._failures = 0
        self._task: asyncio.Task[None] | None = None

    def is_enabled(self, name: str) -> bool:
        """The flag as this worker serves it: pure memory."""
        override = self._overrides.get(name)
        return override.enabled if override is not None else self._defaults[name].enabled

    async def change(self, write: Callable[[AsyncSession], Awaitable[FlagState]]) -> FlagState:
        """Run `write` in a transaction of its own and serve its result once committed.

        Committed here rather than at the end of the request: from the moment
        this worker answers, it serves the new value.
        """
        async with self._database.transaction() as session:
            state = await write(session)
        self.apply(state)
        return state

    def apply(self, state: FlagState) -> None:
        """Serve a committed change without waiting for the next refresh."""
        self._generation += 1
        overrides = dict(self._overrides)
        if state.source == "override":
            assert state.changed_by is not None and state.changed_at is not None
            overrides[state.name] = Override(state.enabled, state.changed_by, state.changed_at)
        else:
            overrides.pop(state.name, None)
        self._overrides = overrides

    async def refresh(self) -> bool:
        """Re-read every override; on failure keep the last ones. True when it read them."""
        generation = self._generation
        try:
            async with (
                asyncio.timeout(REFRESH_TIMEOUT_SECONDS),
                self._database.transaction(read_only=True) as session,
            ):
                overrides = await service.load_overrides(session)
        except Exception as error:
            # Whatever went wrong (database down, table missing, a timeout), the
            # loop must live on: logged once per outage, not every few seconds.
            self._failures += 1
            if self._failures == 1:
                log.warning("feature flags not refreshed, serving the last known values: %r", error)
            return False
        if self._failures:
            log.warning("feature flags refreshed again after %d failed attempts", self._failures)
            self._failures = 0
        if generation == self._generation:
            self._overrides = overrides
        return True

    async def start(self) -> None:
        """Load the overrides once, then keep them fresh until `close`."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._keep_fresh())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.refresh()


def get_feature_flags(request: Request) -> FeatureFlags:
    flags: FeatureFlags = request.app.state.features
    return flags


FeatureFlagsDep = Annotated[FeatureFlags, Depends(get_feature_flags)]
