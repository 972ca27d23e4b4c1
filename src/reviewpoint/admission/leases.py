"""A cap on how many exports one credential runs at once, held as leases.

Beyond the cap a request is refused at once (429) instead of queueing, as
Stripe's concurrent-requests limiter does. With `memory://` the cap counts one
worker process's exports. With Redis every worker shares it: each running
export holds a lease, a member of one sorted set per credential scored by its
expiry, renewed while the export runs and removed when it ends, so the leases
of a worker that crashed expire by themselves within the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, Self, TypeVar
from urllib.parse import quote

import coredis
import coredis.exceptions

from reviewpoint.admission.store import CONNECT_TIMEOUT, STORE_TIMEOUT, check_storage_url
from reviewpoint.errors import AdmissionStoreUnavailable

log = logging.getLogger("reviewpoint.admission")

T = TypeVar("T")

# Server time (TIME) rather than each host's clock, so workers on hosts whose
# clocks drift apart still agree on which leases have expired. Scores are ms.
_NOW_MS = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
"""

# KEYS[1] the credential's lease set; ARGV lease id, TTL in ms, cap.
# Atomic: drop expired leases, count, add below the cap.
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# A renewal re-adds a lease that expired meanwhile (Redis was briefly away):
# the export is still running, so it must count against the cap.
_RENEW = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

_STORE_ERRORS = (coredis.exceptions.RedisError, TimeoutError, OSError)


class _Leases(Protocol):
    renews: bool

    async def acquire(self, key: str, lease_id: str, limit: int) -> bool: ...
    async def renew(self, key: str, lease_id: str) -> None: ...
    async def release(self, key: str, lease_id: str) -> None: ...
    async def close(self) -> None: ...


class _MemoryLeases:
    """Per-process counts: the event loop runs one check-and-add at a time."""

    renews = False

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}

    async def acquire(self, key: str, lease_id: str, limit: int) -> bool:
        held = self._held.setdefault(key, set())
        if len(held) >= limit:
            return False
        held.add(lease_id)
        return True

    async def renew(self, key: str, lease_id: str) -> None:
        return None

    async def release(self, key: str, lease_id: str) -> None:
        held = self._held.get(key)
        if held is not None:
            held.discard(lease_id)
            if not held:
                del self._held[key]

    async def close(self) -> None:
        return None


class _RedisLeases:
    renews = True

    def __init__(self, url: str, ttl: float, key_prefix: str) -> None:
        self._client: coredis.Redis[str] = coredis.Redis.from_url(
            url,
            decode_responses=True,
            connect_timeout=CONNECT_TIMEOUT,
            stream_timeout=STORE_TIMEOUT,
        )
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._ttl_ms = max(1, round(ttl * 1000))
        self._key_prefix = key_prefix

    def _key(self, key: str) -> str:
        return f"{self._key_prefix}:{quote(key, safe='@:.-_')}"

    async def acquire(self, key: str, lease_id: str, limit: int) -> bool:
        admitted = await _bounded(
            self._acquire.execute([self._key(key)], [lease_id, self._ttl_ms, limit])
        )
        return bool(admitted == 1)

    async def renew(self, key: str, lease_id: str) -> None:
        await _bounded(self._renew.execute([self._key(key)], [lease_id, self._ttl_ms]))

    async def release(self, key: str, lease_id: str) -> None:
        await _bounded(self._client.zrem(self._key(key), [lease_id]))

    async def close(self) -> None:
        self._client.connection_pool.disconnect()


async def _bounded(call: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            return await call
    except _STORE_ERRORS as error:
        log.warning("lease store unavailable: %s", error.__class__.__name__)
        raise AdmissionStoreUnavailable() from error


class ConcurrencyLimiter:
    """`async with limiter.acquire(credential, cap) as admitted:` holds a slot while inside."""

    def __init__(
        self, storage_url: str, *, ttl: float = 30.0, key_prefix: str = "reviewpoint:leases"
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._leases: _Leases = (
            _MemoryLeases()
            if check_storage_url(storage_url) == "memory"
            else _RedisLeases(storage_url, ttl, key_prefix)
        )
        # Three renewals per TTL: one lost or late renewal does not drop the lease.
        self._renew_every = ttl / 3
        # Releases still running after their holder was cancelled; close() waits for them.
        self._pending: set[asyncio.Task[None]] = set()

    def acquire(self, key: str, limit: int) -> AbstractAsyncContextManager[bool]:
        """Yield True with a slot held until exit, or False at once when `limit` are taken.

        Raises `AdmissionStoreUnavailable` when the store cannot be reached.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return self._hold(key, limit)

    @contextlib.asynccontextmanager
    async def _hold(self, key: str, limit: int) -> AsyncIterator[bool]:
        lease_id = secrets.token_hex(16)
        acquiring = asyncio.ensure_future(self._leases.acquire(key, lease_id, limit))
        try:
            admitted = await asyncio.shield(acquiring)
        except asyncio.CancelledError:
            # The lease may land after we stop waiting: remove it once the call ends.
            self._in_background(self._release_after(acquiring, key, lease_id))
            raise
        if not admitted:
            yield False
            return
        renewal = (
            asyncio.create_task(self._keep_renewing(key, lease_id)) if self._leases.renews else None
        )
        try:
            yield True
        finally:
            # Shielded so that a cancelled export (client gone, shutdown) still frees its slot.
            await asyncio.shield(self._in_background(self._finish(renewal, key, lease_id)))

    async def _keep_renewing(self, key: str, lease_id: str) -> None:
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                await self._leases.renew(key, lease_id)
            except AdmissionStoreUnavailable:
                # Keep the export running; the next renewal may reach the store again.
                log.warning("could not renew an export lease; retrying")

    async def _finish(self, renewal: asyncio.Task[None] | None, key: str, lease_id: str) -> None:
        if renewal is not None:
            renewal.cancel()
            # A renewal in flight must not re-add the lease after it is removed.
            await asyncio.wait([renewal])
        await self._release(key, lease_id)

    async def _release_after(
        self, acquiring: asyncio.Future[bool], key: str, lease_id: str
    ) -> None:
        await asyncio.wait([acquiring])
        if not acquiring.cancelled() and acquiring.exception() is None and acquiring.result():
            await self._release(key, lease_id)

    async def _release(self, key: str, lease_id: str) -> None:
        try:
            await self._leases.release(key, lease_id)
        except AdmissionStoreUnavailable:
            log.warning("could not release an export lease; it expires by itself")

    def _in_background(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def close(self) -> None:
        """Wait for releases still in flight, then drop the store's connections."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=STORE_TIMEOUT * 2)
        await self._leases.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
