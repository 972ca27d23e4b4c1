"""Where budgets and leases live: `memory://` (per process) or a Redis URL (shared)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

# Every call to the store is bounded: a slow or unreachable Redis must turn into
# a quick 503, never a request that hangs. Connecting gets half of it, so a
# refused or black-holed host still leaves time for the answer.
STORE_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0


def check_storage_url(url: str) -> Literal["memory", "redis"]:
    """Accept `memory://`, `redis://host:port/db` or `rediss://...`; `ValueError` otherwise."""
    if url == "memory://":
        return "memory"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ("redis", "rediss"):
        raise ValueError(
            "must be memory:// or a Redis URL such as redis://127.0.0.1:6379/0 "
            f"(got {scheme + '://...' if scheme else 'no scheme'})"
        )
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("has an invalid port (expected redis://host:port/db)") from None
    return "redis"


def redis_client_options() -> dict[str, float]:
    """coredis client options shared by the rate limiter and the leases."""
    return {"connect_timeout": CONNECT_TIMEOUT, "stream_timeout": STORE_TIMEOUT}
