"""Per-credential concurrency caps held as leases in real stores (memory and Redis)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from reviewpoint.admission import ConcurrencyLimiter
from tests.admission.stores import REDIS_URL, expect_store_unavailable_quickly, redis

ROOT = Path(__file__).resolve().parents[2]


async def admitted_within(limiter: ConcurrencyLimiter, seconds: float) -> float | None:
    """Seconds until a cap-1 slot for key-1 is free, polling; None if it never is."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        async with limiter.acquire("key-1", 1) as admitted:
            if admitted:
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


def test_cap_admits_up_to_the_limit_and_refuses_the_next(store_url: str, key_prefix: str) -> None:
    async def run() -> list[bool]:
        async with ConcurrencyLimiter(store_url, key_prefix=key_prefix) as limiter:
            async with AsyncExitStack() as stack:
                first = await stack.enter_async_context(limiter.acquire("key-1", 2))
                second = await stack.enter_async_context(limiter.acquire("key-1", 2))
                async with limiter.acquire("key-1", 2) as third:
                    pass
                async with limiter.acquire("key-2", 2) as other_credential:
                    pass
            async with limiter.acquire("key-1", 2) as after_release:
                pass
            return [first, second, third, other_credential, after_release]

    assert asyncio.run(run()) == [True, True, False, True, True]


def test_slot_is_released_when_the_holder_raises(store_url: str, key_prefix: str) -> None:
    async def run() -> bool:
        async with ConcurrencyLimiter(store_url, key_prefix=key_prefix) as limiter:
            with pytest.raises(RuntimeError, match="export failed"):
                async with limiter.acquire("key-1", 1) as admitted:
                    assert admitted
                    raise RuntimeError("export failed")
            async with limiter.acquire("key-1", 1) as again:
                return again

    assert asyncio.run(run())


def test_slot_is_released_when_the_holder_is_cancelled(store_url: str, key_prefix: str) -> None:
    async def run() -> tuple[bool, bool]:
        async with ConcurrencyLimiter(store_url, key_prefix=key_prefix) as limiter:
            held = asyncio.Event()

            async def export() -> None:
                async with limiter.acquire("key-1", 1) as admitted:
                    assert admitted
                    held.set()
                    await asyncio.sleep(3600)

            task = asyncio.create_task(export())
            await held.wait()
            async with limiter.acquire("key-1", 1) as while_held:
                pass
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with limiter.acquire("key-1", 1) as after_cancel:
                pass
            return while_held, after_cancel

    assert asyncio.run(run()) == (False, True)


def test_a_lease_granted_after_its_requester_was_cancelled_is_released(
    store_url: str, key_prefix: str
) -> None:
    async def run() -> float | None:
        async with ConcurrencyLimiter(store_url, key_prefix=key_prefix) as limiter:

            async def export() -> None:
                async with limiter.acquire("key-1", 1):
                    raise AssertionError("the cancelled export must not run")

            task = asyncio.create_task(export())
            await asyncio.sleep(0)  # export() now waits for the store's answer
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Let the store answer the abandoned request before competing with it.
            await asyncio.sleep(0.5)
            return await admitted_within(limiter, 2)

    assert asyncio.run(run()) is not None


@pytest.mark.parametrize(("store", "shared"), [("redis", True), ("memory", False)])
def test_two_limiters_share_the_cap_only_through_redis(
    key_prefix: str, store: str, shared: bool
) -> None:
    # Two worker processes are two limiters: on one Redis they share the cap,
    # in memory each caps its own exports.
    url = REDIS_URL if store == "redis" else "memory://"

    async def run() -> list[bool]:
        async with (
            ConcurrencyLimiter(url, key_prefix=key_prefix) as first,
            ConcurrencyLimiter(url, key_prefix=key_prefix) as second,
            first.acquire("key-1", 2) as a,
            second.acquire("key-1", 2) as b,
            first.acquire("key-1", 2) as c,
            second.acquire("key-1", 2) as d,
        ):
            return [a, b, c, d]

    assert asyncio.run(run()) == ([True, True, False, False] if shared else [True] * 4)


@pytest.mark.parametrize(("lease_expiry_ms", "admitted"), [(1, True), (None, False)])
def test_a_lease_counts_until_its_expiry(
    key_prefix: str, lease_expiry_ms: int | None, admitted: bool
) -> None:
    # A lease written by another worker: long expired (its holder stopped
    # renewing), or valid for an hour.
    expiry = lease_expiry_ms or int(time.time() * 1000) + 3_600_000

    async def run() -> bool:
        async with redis() as client:
            await client.zadd(f"{key_prefix}:key-1", {"other-worker": expiry})
        async with (
            ConcurrencyLimiter(REDIS_URL, key_prefix=key_prefix) as limiter,
            limiter.acquire("key-1", 1) as result,
        ):
            return result

    assert asyncio.run(run()) is admitted


def test_a_held_lease_is_renewed_beyond_its_ttl(key_prefix: str) -> None:
    async def run() -> tuple[bool, bool]:
        async with (
            ConcurrencyLimiter(REDIS_URL, ttl=0.6, key_prefix=key_prefix) as holder,
            ConcurrencyLimiter(REDIS_URL, key_prefix=key_prefix) as other,
        ):
            async with holder.acquire("key-1", 1) as admitted:
                assert admitted
                await asyncio.sleep(1.5)
                async with other.acquire("key-1", 1) as during:
                    pass
            async with other.acquire("key-1", 1) as after:
                pass
            return during, after

    assert asyncio.run(run()) == (False, True)


HOLDER = """
import asyncio, sys
from reviewpoint.admission import ConcurrencyLimiter

async def main():
    limiter = ConcurrencyLimiter(sys.argv[1], ttl=1.0, key_prefix=sys.argv[2])
    async with limiter.acquire("key-1", 1) as admitted:
        print("held" if admitted else "refused", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


def test_the_lease_of_a_killed_worker_expires_by_itself(key_prefix: str) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", HOLDER, REDIS_URL, key_prefix],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "held"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    async def run() -> tuple[bool, float | None]:
        async with ConcurrencyLimiter(REDIS_URL, key_prefix=key_prefix) as limiter:
            async with limiter.acquire("key-1", 1) as right_after_the_crash:
                pass
            return right_after_the_crash, await admitted_within(limiter, 3)

    right_after_the_crash, freed_after = asyncio.run(run())
    assert not right_after_the_crash
    assert freed_after is not None
    assert freed_after <= 1.5


@pytest.mark.parametrize("store", ["refusing", "silent"])
def test_an_unreachable_redis_is_reported_quickly_as_store_unavailable(store: str) -> None:
    async def use(url: str) -> None:
        async with ConcurrencyLimiter(url) as limiter, limiter.acquire("key-1", 2):
            pass

    error = expect_store_unavailable_quickly(use, store)
    assert error.status_code == 503


@pytest.mark.parametrize("limit", [0, -1])
def test_a_cap_below_one_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimiter("memory://").acquire("key-1", limit)
