"""The Redis the admission tests use, and direct access to it for setup and checks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import coredis
import pytest

from reviewpoint.admission import AdmissionStoreUnavailable

REDIS_URL = os.environ.get("REVIEWPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Nothing listens on port 1 of loopback: connections are refused at once.
CLOSED_URL = "redis://127.0.0.1:1/0"


@asynccontextmanager
async def redis() -> AsyncIterator[coredis.Redis[str]]:
    client: coredis.Redis[str] = coredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield client
    finally:
        client.connection_pool.disconnect()


async def delete_keys(pattern: str) -> None:
    async with redis() as client:
        keys = [key async for key in client.scan_iter(match=pattern)]
        if keys:
            await client.delete(keys)


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A loopback server that accepts connections and never answers: a hung Redis."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def broken_store(kind: str) -> AsyncIterator[str]:
    """A Redis URL that refuses connections (`refusing`) or never answers (`silent`)."""
    if kind == "refusing":
        yield CLOSED_URL
    else:
        async with silent_server() as url:
            yield url


def expect_store_unavailable_quickly(
    use: Callable[[str], Awaitable[None]], kind: str
) -> AdmissionStoreUnavailable:
    """Run `use(url)` against a broken store: it must fail closed, well within 3 s."""

    async def run() -> None:
        async with broken_store(kind) as url:
            await use(url)

    started = time.monotonic()
    with pytest.raises(AdmissionStoreUnavailable) as caught:
        asyncio.run(run())
    assert time.monotonic() - started < 3
    return caught.value
