"""Redis, the store of rate limits and export leases, crashes or hangs under a
running server: limited routes (exports, logins) fail closed with 503 and
`Retry-After: 5` within the store's 2 s bound, everything else keeps working,
and all of it recovers once Redis answers again, with no restart.

Each test runs its own redis-server on a free port and kills it; the machine's
shared Redis is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.audit.records import settled_rows
from tests.data import insert_users
from tests.faults.calls import (
    EXPORT_FULL,
    Live,
    assert_retry_later,
    assert_served,
    live_server_on,
    slow_reading_client,
)

REDIS_SERVER = shutil.which("redis-server")
# The store's own bound is 2 s (admission/store.py); the rest is a loaded machine.
FAIL_CLOSED_SECONDS = 3.5
USERS = 5000


class ThrowawayRedis:
    """A redis-server of this test's own, that keeps its port across restarts."""

    def __init__(self, directory: Path) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(7) == b"+PONG\r\n"
        except OSError:
            return False

    def kill(self) -> None:
        """A crash: the process is gone, its connections reset, its data lost."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        """A hang: connections are accepted by the kernel, nothing ever answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@contextmanager
def throwaway_redis(directory: Path) -> Iterator[ThrowawayRedis]:
    redis = ThrowawayRedis(directory)
    redis.start()
    try:
        yield redis
    finally:
        if redis.process is not None and redis.process.poll() is None:
            redis.thaw()
            redis.kill()


def _assert_fails_closed(responses: dict[str, httpx.Response]) -> None:
    for name in ("export", "login"):
        assert_retry_later(responses[name], "Rate limit store unavailable", retry_after=5)
        assert responses[name].elapsed.total_seconds() < FAIL_CLOSED_SECONDS, name
    # Nothing else depends on Redis.
    assert (responses["admin"].status_code, responses["ready"].status_code) == (200, 200)


def _limited_by(
    db_url: str, redis: ThrowawayRedis, **overrides: object
) -> AbstractContextManager[Live]:
    prefix = f"faults-{uuid.uuid4().hex}"
    return live_server_on(
        db_url, rate_limit_storage=redis.url, rate_limit_prefix=prefix, **overrides
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    with throwaway_redis(tmp_path) as redis:
        yield redis


def test_a_crashed_rate_limit_store_fails_closed_and_its_restart_needs_no_server_restart(
    db_url: str, redis_server: ThrowawayRedis
) -> None:
    with _limited_by(db_url, redis_server) as live:
        assert_served(live.each_route())  # the store's pools hold connections now
        redis_server.kill()
        crashed = live.each_route()
        redis_server.start()
        back = live.each_route()
    _assert_fails_closed(crashed)
    assert_served(back)


def test_a_hung_rate_limit_store_fails_closed_in_time_and_recovers_when_it_answers(
    db_url: str, redis_server: ThrowawayRedis
) -> None:
    with _limited_by(db_url, redis_server) as live:
        assert_served(live.each_route())
        redis_server.freeze()
        try:
            hung = live.each_route()
        finally:
            redis_server.thaw()
        # Replies to the commands that timed out arrive now: none may be taken
        # for the answer to a later command.
        back = [live.each_route() for _ in range(3)]
    _assert_fails_closed(hung)
    for responses in back:
        assert_served(responses)
    # Each export spent exactly one request of the budget, as counted by Redis.
    remaining = [_remaining(responses["export"]) for responses in back]
    assert remaining == [remaining[0], remaining[0] - 1, remaining[0] - 2]


def _remaining(response: httpx.Response) -> int:
    """`r` of the `RateLimit` field: `"exports";r=12;t=41`."""
    fields = dict(part.split("=") for part in response.headers["RateLimit"].split(";")[1:])
    return int(fields["r"])


def test_an_export_running_when_the_store_crashes_completes(
    db_url: str, redis_server: ThrowawayRedis
) -> None:
    """Admission is decided before the first byte: the store failing afterwards
    (its lease cannot be renewed or released; it expires by itself) never cuts
    a running export off."""
    insert_users(db_url, [(f"user{i}@example.com", None) for i in range(USERS)])
    with (
        _limited_by(db_url, redis_server, export_chunk_rows=100) as live,
        slow_reading_client(live.server) as client,
        client.stream("GET", EXPORT_FULL, headers=live.callers.key) as response,
    ):
        assert response.status_code == 200
        pieces = response.iter_raw()
        received = next(pieces)
        redis_server.kill()
        at_the_crash = len(received)
        for piece in pieces:
            received += piece
    # The buffers hold about 100 kB: most of the export was still to be made.
    assert at_the_crash + 200 * 1024 < len(received)
    assert received.count(b"@example.com") == USERS + 1  # and the admin
    [record] = settled_rows(db_url, 1)
    assert (record["outcome"], record["rows"]) == ("completed", USERS + 1)
