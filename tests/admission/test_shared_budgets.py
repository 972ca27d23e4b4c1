"""Two server processes on one Redis share one export budget and one concurrency cap.

The servers are real `reviewpoint serve` processes on 127.0.0.1, on the same
database, with `REVIEWPOINT_RATE_LIMIT_STORAGE` pointing at the machine's Redis
and a key prefix of this test's own.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import httpx

from tests.conftest import served_process
from tests.data import create_api_key, insert_users

REDIS_URL = os.environ.get("REVIEWPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
EXPORT_FULL = "/api/v1/users/export-full"


def _serve(db_url: str, prefix: str, log: Path, **settings: str) -> AbstractContextManager[str]:
    return served_process(
        db_url, log, rate_limit_storage=REDIS_URL, rate_limit_prefix=prefix, **settings
    )


def _status(url: str, headers: dict[str, str]) -> int:
    return httpx.get(url, headers=headers, timeout=10).status_code


def test_two_processes_share_one_export_budget(db_url: str, tmp_path: Path) -> None:
    insert_users(db_url, [(f"u{i}@example.com", f"U {i}") for i in range(20)])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    prefix = f"rvp-test-{uuid.uuid4().hex}"
    log = tmp_path / "server.log"
    with ExitStack() as stack:
        servers = [
            stack.enter_context(_serve(db_url, prefix, log, export_rate_limit="4/minute"))
            for _ in range(2)
        ]
        statuses = []
        for attempt in range(8):
            response = httpx.get(servers[attempt % 2] + EXPORT_FULL, headers=key, timeout=10)
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
        # Alone, each process would have let 4 through: 8 in all.
        assert statuses == [200, 200, 200, 200, 429, 429, 429, 429]


def test_two_processes_share_one_concurrency_cap(db_url: str, tmp_path: Path) -> None:
    # More than a loopback socket's send buffer (4 MiB) can hold: the export stays open.
    name = "A name long enough to make the export larger than socket buffers"
    insert_users(db_url, [(f"u{i}@example.com", f"{name} {i}") for i in range(60_000)])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    prefix = f"rvp-test-{uuid.uuid4().hex}"
    log = tmp_path / "server.log"
    limits = {"export_max_concurrent_per_credential": "1", "export_chunk_rows": "100"}
    with ExitStack() as stack:
        first, second = (
            stack.enter_context(_serve(db_url, prefix, log, **limits)) for _ in range(2)
        )
        transport = httpx.HTTPTransport(
            # Small, but not below loopback's 64 KiB segment size: a smaller
            # window makes TCP stall in silly-window avoidance instead of flowing.
            socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)]
        )
        with (
            httpx.Client(transport=transport, timeout=20) as slow,
            slow.stream("GET", first + EXPORT_FULL, headers=key) as running,
        ):
            assert running.status_code == 200
            refused = httpx.get(second + EXPORT_FULL, headers=key, timeout=10)
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "1"
            running.read()
        # Once the first export ended, the other process admits the credential.
        deadline = time.monotonic() + 10
        while (
            status := httpx.get(second + EXPORT_FULL, headers=key, timeout=10).status_code
        ) != 200:
            assert status == 429 and time.monotonic() < deadline
            time.sleep(0.2)
