"""Named request budgets counted with `limits`, in process memory or in a shared Redis.

The moving-window strategy is used: no more than `q` hits in any `w` seconds, so
a client cannot spend two budgets back to back across a fixed window's edge
(which matters for login attempts), and `Retry-After` is the time until the
oldest counted hit leaves the window, the moment one more request is allowed.
It keeps one timestamp per hit, hence the cap on `q` in `Policy.parse`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Self
from urllib.parse import quote

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from reviewpoint.admission.store import STORE_TIMEOUT, check_storage_url, redis_client_options
from reviewpoint.errors import AdmissionStoreUnavailable

log = logging.getLogger("reviewpoint.admission")

# One timestamp per hit is kept for the moving window; beyond this a budget is
# not a defence any more and would only cost memory.
MAX_POLICY_AMOUNT = 10_000
# Keys come from clients (an account name at login): long ones are hashed so a
# caller cannot make us store arbitrarily large keys.
MAX_KEY_PART = 128


@dataclass(frozen=True)
class Policy:
    """One named budget, e.g. `Policy.parse("exports", "30/minute")`."""

    name: str
    item: RateLimitItem

    @classmethod
    def parse(cls, name: str, text: str) -> Policy:
        """Read `N/unit` (`30/minute`, `10 per 5 minutes`); `ValueError` says what is wrong."""
        try:
            items = parse_many(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a rate limit; write it as N/unit, e.g. 30/minute"
            ) from None
        if len(items) != 1:
            raise ValueError(f"{text!r} must be one rate limit (e.g. 30/minute), not several")
        item = items[0]
        if not 1 <= item.amount <= MAX_POLICY_AMOUNT:
            raise ValueError(f"{text!r} must allow between 1 and {MAX_POLICY_AMOUNT} requests")
        return cls(name, item)

    @property
    def quota(self) -> int:
        return self.item.amount

    @property
    def window(self) -> int:
        """The window in whole seconds."""
        return self.item.get_expiry()


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit, and what to tell the client about its budget."""

    allowed: bool
    policy: Policy
    remaining: int
    reset_after: int

    def headers(self) -> dict[str, str]:
        """`RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers), and
        `Retry-After` when denied."""
        name = self.policy.name.replace("\\", "\\\\").replace('"', '\\"')
        headers = {
            "RateLimit-Policy": f'"{name}";q={self.policy.quota};w={self.policy.window}',
            "RateLimit": f'"{name}";r={self.remaining};t={self.reset_after}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_after)
        return headers


def _limits_storage(storage_url: str, key_prefix: str) -> Storage:
    scheme = check_storage_url(storage_url)
    if scheme == "memory":
        storage = storage_from_string("async+memory://")
    else:
        storage = storage_from_string(
            f"async+{storage_url}",
            key_prefix=key_prefix,
            wrap_exceptions=True,
            **redis_client_options(),
        )
    assert isinstance(storage, Storage)
    return storage


def _key_part(part: str) -> str:
    if len(part) > MAX_KEY_PART:
        return "sha256-" + hashlib.sha256(part.encode()).hexdigest()
    # limits joins identifiers with "/": quoting keeps ("a/b",) and ("a", "b") apart.
    return quote(part, safe="@:.-_")


class RateLimiter:
    """Counts hits against named policies; budgets are shared by every limiter on one store.

    With `memory://` each worker process counts on its own; with `redis://...`
    all workers and hosts pointing at the same Redis share one budget.
    """

    def __init__(self, storage_url: str, *, key_prefix: str = "reviewpoint:limits") -> None:
        self._storage = _limits_storage(storage_url, key_prefix)
        self._strategy = MovingWindowRateLimiter(self._storage)

    async def hit(self, policy: Policy, *key: str) -> Decision:
        """Spend one request of `policy`'s budget for `key` (e.g. a credential id)."""
        identifiers = (policy.name, *(_key_part(part) for part in key))
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                allowed = await self._strategy.hit(policy.item, *identifiers)
                stats = await self._strategy.get_window_stats(policy.item, *identifiers)
        except (StorageError, TimeoutError, OSError) as error:
            # Fail closed: a budget we cannot check is not skipped.
            log.warning("rate limit store unavailable: %s", error.__class__.__name__)
            raise AdmissionStoreUnavailable() from error
        reset_after = max(0, math.ceil(stats.reset_time - time.time()))
        if not allowed:
            reset_after = max(1, reset_after)
        return Decision(allowed, policy, max(0, stats.remaining), reset_after)

    async def clear(self, policy: Policy, *key: str) -> None:
        """Forget what `key` spent of `policy` (e.g. after a successful login, or in tests)."""
        identifiers = (policy.name, *(_key_part(part) for part in key))
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self._strategy.clear(policy.item, *identifiers)
        except (StorageError, TimeoutError, OSError) as error:
            raise AdmissionStoreUnavailable() from error

    async def close(self) -> None:
        """Drop the store's connections (Redis) or its expiry task (memory)."""
        await _close_storage(self._storage)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _close_storage(storage: Storage) -> None:
    bridge = getattr(storage, "bridge", None)
    client = getattr(bridge, "storage", None)
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.disconnect()
    timer = getattr(storage, "timer", None)
    if isinstance(timer, asyncio.Task):
        timer.cancel()
