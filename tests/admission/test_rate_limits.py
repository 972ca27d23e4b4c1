"""Rate limits counted in real stores: process memory and the machine's Redis."""

from __future__ import annotations

import asyncio
import re

import pytest

from reviewpoint.admission import Decision, Policy, RateLimiter
from tests.admission.stores import REDIS_URL, expect_store_unavailable_quickly


def hit_each(storage_url: str, key_prefix: str, policy: Policy, *keys: str) -> list[Decision]:
    """Hit `policy` once per key with one fresh limiter."""

    async def run() -> list[Decision]:
        async with RateLimiter(storage_url, key_prefix=key_prefix) as limiter:
            return [await limiter.hit(policy, key) for key in keys]

    return asyncio.run(run())


def test_budget_counts_down_and_refuses_the_hit_after_the_quota(
    store_url: str, key_prefix: str
) -> None:
    policy = Policy.parse("exports", "3/minute")
    decisions = hit_each(store_url, key_prefix, policy, *["key-1"] * 4)

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    for decision in decisions:
        assert 1 <= decision.reset_after <= 60
    allowed, denied = decisions[0].headers(), decisions[3].headers()
    assert allowed["RateLimit-Policy"] == '"exports";q=3;w=60'
    assert re.fullmatch(r'"exports";r=2;t=\d+', allowed["RateLimit"])
    assert "Retry-After" not in allowed
    assert denied["RateLimit-Policy"] == '"exports";q=3;w=60'
    assert denied["RateLimit"] == f'"exports";r=0;t={decisions[3].reset_after}'
    assert int(denied["Retry-After"]) == decisions[3].reset_after >= 1


def test_each_key_and_each_policy_has_its_own_budget(store_url: str, key_prefix: str) -> None:
    exports = Policy.parse("exports", "1/minute")
    logins = Policy.parse("login", "1/minute")

    async def run() -> list[bool]:
        async with RateLimiter(store_url, key_prefix=key_prefix) as limiter:
            return [
                (await limiter.hit(exports, "a")).allowed,
                (await limiter.hit(exports, "a")).allowed,
                (await limiter.hit(exports, "b")).allowed,
                (await limiter.hit(logins, "a")).allowed,
                # Identifiers are joined with "/" inside limits; they must not merge.
                (await limiter.hit(exports, "c/d")).allowed,
                (await limiter.hit(exports, "c", "d")).allowed,
            ]

    assert asyncio.run(run()) == [True, False, True, True, True, True]


def test_a_very_long_key_is_counted_like_any_other(store_url: str, key_prefix: str) -> None:
    policy = Policy.parse("login", "1/minute")
    account = "x" * 10_000 + "@example.com"
    decisions = hit_each(store_url, key_prefix, policy, account, account, account + "y")
    assert [d.allowed for d in decisions] == [True, False, True]


@pytest.mark.parametrize(("store", "shared"), [("redis", True), ("memory", False)])
def test_two_limiters_share_a_budget_only_through_redis(
    key_prefix: str, store: str, shared: bool
) -> None:
    # Two worker processes are two limiters: on one Redis they spend one budget,
    # in memory each counts its own.
    url = REDIS_URL if store == "redis" else "memory://"
    policy = Policy.parse("exports", "2/minute")

    async def run() -> list[bool]:
        async with (
            RateLimiter(url, key_prefix=key_prefix) as first,
            RateLimiter(url, key_prefix=key_prefix) as second,
        ):
            return [
                (await first.hit(policy, "key-1")).allowed,
                (await second.hit(policy, "key-1")).allowed,
                (await first.hit(policy, "key-1")).allowed,
                (await second.hit(policy, "key-1")).allowed,
                (await first.hit(policy, "key-1")).allowed,
            ]

    expected = [True, True, False, False, False] if shared else [True, True, True, True, False]
    assert asyncio.run(run()) == expected


def test_a_refused_client_is_admitted_again_after_retry_after(
    store_url: str, key_prefix: str
) -> None:
    policy = Policy.parse("login", "1/second")

    async def run() -> tuple[Decision, Decision]:
        async with RateLimiter(store_url, key_prefix=key_prefix) as limiter:
            await limiter.hit(policy, "203.0.113.9")
            denied = await limiter.hit(policy, "203.0.113.9")
            await asyncio.sleep(denied.reset_after + 0.05)
            return denied, await limiter.hit(policy, "203.0.113.9")

    denied, later = asyncio.run(run())
    assert not denied.allowed
    assert denied.reset_after == 1
    assert later.allowed


@pytest.mark.parametrize("store", ["refusing", "silent"])
def test_an_unreachable_redis_is_reported_quickly_as_store_unavailable(store: str) -> None:
    policy = Policy.parse("exports", "30/minute")

    async def use(url: str) -> None:
        async with RateLimiter(url) as limiter:
            await limiter.hit(policy, "key-1")

    error = expect_store_unavailable_quickly(use, store)
    assert error.status_code == 503
    assert error.detail == "Rate limit store unavailable"
    assert int(error.response_headers()["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("text", "quota", "window"),
    [("30/minute", 30, 60), ("10 per 5 minutes", 10, 300), ("1/second", 1, 1)],
)
def test_policy_reads_quota_and_window(text: str, quota: int, window: int) -> None:
    policy = Policy.parse("exports", text)
    assert (policy.name, policy.quota, policy.window) == ("exports", quota, window)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30/fortnight", "is not a rate limit"),
        ("", "is not a rate limit"),
        ("0/minute", "between 1 and"),
        ("100000/second", "between 1 and"),
        ("1/second;10/minute", "one rate limit"),
    ],
)
def test_policy_refuses_bad_text_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy.parse("exports", text)


def test_clear_gives_a_key_its_whole_budget_back(store_url: str, key_prefix: str) -> None:
    policy = Policy.parse("login", "1/minute")

    async def run() -> list[bool]:
        async with RateLimiter(store_url, key_prefix=key_prefix) as limiter:
            first = await limiter.hit(policy, "ops@example.com")
            second = await limiter.hit(policy, "ops@example.com")
            await limiter.clear(policy, "ops@example.com")
            third = await limiter.hit(policy, "ops@example.com")
            return [first.allowed, second.allowed, third.allowed]

    assert asyncio.run(run()) == [True, False, True]
