"""Exports under many callers, against a real uvicorn on 127.0.0.1, on each database.

Held exports come from raw sockets that send a request, read the status line
and then nothing more: with small kernel buffers on both sides the server soon
has nowhere to write and the export stays open, holding its snapshot and its
admission slot, exactly as a stalled client in production does.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator, MutableMapping
from contextlib import ExitStack, contextmanager, suppress

import asyncpg
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from reviewpoint.config import Settings, load_settings
from reviewpoint.main import create_app
from tests.conftest import LiveServer, eventually
from tests.data import BULK_PASSWORD, create_api_key, insert_user, insert_users, login

EXPORT_FULL = "/api/v1/users/export-full"
READY = "/api/v1/health/ready"
SMALL_BUFFER = 4096
USERS = 4000


def _settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "db_url": db_url,
        "log_level": "warning",
        "export_chunk_rows": 100,
        **overrides,
    }
    return load_settings(_env_file=None, **values)


@contextmanager
def _server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        # Accepted sockets inherit the listening socket's small send buffer.
        server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        yield server


def _fill(db_url: str, count: int = USERS) -> None:
    insert_users(db_url, [(f"user{i}@example.com", f"User number {i:06d}") for i in range(count)])


def _key(db_url: str, name: str = "k") -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"], name=name)[1]}


def _held_export(server: LiveServer, headers: dict[str, str]) -> tuple[socket.socket, int]:
    """Start an export that reads nothing past the status line; its socket and status."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    port = int(server.url.rsplit(":", 1)[1])
    sock.connect(("127.0.0.1", port))
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"GET {EXPORT_FULL} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode())
    sock.settimeout(20)
    status_line = sock.recv(12)  # b"HTTP/1.1 200"
    return sock, int(status_line[9:12])


def _idle_in_transaction(db_url: str) -> int:
    if not db_url.startswith("postgresql"):
        return 0
    url = make_url(db_url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def count() -> int:
        connection = await asyncpg.connect(dsn)
        try:
            found: int = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                "AND state LIKE 'idle in transaction%'",
                url.database,
            )
            return found
        finally:
            await connection.close()

    return asyncio.run(count())


# --- caps -------------------------------------------------------------------------


@pytest.mark.timing
def test_twenty_concurrent_exports_of_one_key_get_200_or_429_and_readiness_stays_fast(
    db_url: str,
) -> None:
    _fill(db_url, 2000)
    key = _key(db_url)
    settings = _settings(db_url, db_pool_size=6, export_rate_limit="1000/minute")

    async def storm(base: str) -> tuple[list[httpx.Response], list[float]]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def export() -> httpx.Response:
                return await client.get(EXPORT_FULL, headers=key)

            async def probe() -> list[float]:
                took = []
                for _ in range(10):
                    started = time.perf_counter()
                    assert (await client.get(READY)).status_code == 200
                    took.append(time.perf_counter() - started)
                    await asyncio.sleep(0.02)
                return took

            *exports, probes = await asyncio.gather(*(export() for _ in range(20)), probe())
            return exports, probes

    with _server(settings) as server:
        responses, probes = asyncio.run(storm(server.url))
        assert eventually(lambda: server.export_connections_in_use() == 0)
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses
    for response in responses:
        if response.status_code == 200:
            assert response.text.count("@example.com") == 2000
        else:
            assert int(response.headers["Retry-After"]) >= 1
            assert "detail" in response.json()
    assert max(probes) < 1.0, probes


def test_a_credential_over_its_concurrency_cap_gets_429_at_once(db_url: str) -> None:
    _fill(db_url)
    key, other = _key(db_url, "busy"), _key(db_url, "other")
    settings = _settings(db_url, export_max_concurrent_per_credential=2, export_max_concurrent=4)
    with _server(settings) as server, ExitStack() as held:
        for _ in range(2):
            sock, status = _held_export(server, key)
            held.callback(sock.close)
            assert status == 200
        started = time.perf_counter()
        third = httpx.get(server.url + EXPORT_FULL, headers=key, timeout=10)
        assert time.perf_counter() - started < 2
        assert third.status_code == 429
        assert third.headers["Retry-After"] == "1"
        assert "already runs 2 exports" in third.json()["detail"]
        # Another credential is not affected.
        assert httpx.get(server.url + EXPORT_FULL, headers=other, timeout=10).status_code == 200


def test_exports_beyond_the_workers_slots_get_429_and_the_admin_api_still_answers(
    db_url: str,
) -> None:
    _fill(db_url)
    insert_user(db_url, "admin@example.com", is_admin=True)
    keys = [_key(db_url, f"k{i}") for i in range(3)]
    settings = _settings(db_url, export_max_concurrent=2)
    with _server(settings) as server, ExitStack() as held:
        for key in keys[:2]:
            sock, status = _held_export(server, key)
            held.callback(sock.close)
            assert status == 200
        refused = httpx.get(server.url + EXPORT_FULL, headers=keys[2], timeout=10)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert "already runs 2 exports" in refused.json()["detail"]
        with httpx.Client(base_url=server.url, timeout=5) as client:
            admin = login(client, "admin@example.com", BULK_PASSWORD)
            assert client.get("/api/v1/users?limit=5", headers=admin).status_code == 200
            assert client.get(READY).status_code == 200
        held.close()
        assert eventually(lambda: server.export_connections_in_use() == 0)
        assert httpx.get(server.url + EXPORT_FULL, headers=keys[2], timeout=10).status_code == 200


def test_export_rate_limit_answers_429_with_ratelimit_fields(db_url: str) -> None:
    key = _key(db_url)
    settings = _settings(db_url, export_rate_limit="3/minute")
    with _server(settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        remaining = []
        for _ in range(3):
            response = client.get(EXPORT_FULL, headers=key)
            assert response.status_code == 200
            assert response.headers["RateLimit-Policy"] == '"exports";q=3;w=60'
            remaining.append(response.headers["RateLimit"])
        assert [value.split(";")[1] for value in remaining] == ["r=2", "r=1", "r=0"]
        refused = client.get(EXPORT_FULL, headers=key)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["RateLimit"].startswith('"exports";r=0;t=')
        assert "rate limit" in refused.json()["detail"].lower()
        # Each credential has its own budget.
        assert client.get(EXPORT_FULL, headers=_key(db_url, "fresh")).status_code == 200


# --- timeouts -----------------------------------------------------------------------


def test_a_client_that_reads_nothing_is_cut_off_and_its_snapshot_released(
    db_url: str,
) -> None:
    _fill(db_url)
    key = _key(db_url)
    settings = _settings(db_url, export_send_timeout=1.0)
    with _server(settings) as server:
        sock, status = _held_export(server, key)
        with sock:
            assert status == 200
            assert server.export_connections_in_use() >= 1
            # Cut off after about a second: the snapshot is gone, no transaction idles.
            assert eventually(lambda: server.export_connections_in_use() == 0, seconds=10)
            # A discarded connection's backend ends a moment after the pool lets go.
            assert eventually(lambda: _idle_in_transaction(db_url) == 0, seconds=5)
            # The client then finds the download broken off: no final zero-length chunk.
            sock.settimeout(10)
            received = b""
            while piece := sock.recv(65536):
                received += piece
            assert not received.endswith(b"\r\n0\r\n\r\n")
        # The slot is free again for the same credential.
        assert httpx.get(server.url + EXPORT_FULL, headers=key, timeout=10).status_code == 200


def test_an_export_running_past_max_seconds_is_cut_off(db_url: str) -> None:
    _fill(db_url)
    key = _key(db_url)
    settings = _settings(db_url, export_max_seconds=1.0, export_send_timeout=30.0)
    with _server(settings) as server:
        transport = httpx.HTTPTransport(
            socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)]
        )
        # Uncompressed: gzipped, the whole export would fit in the socket buffers.
        identity = {**key, "Accept-Encoding": "identity"}
        with (
            httpx.Client(base_url=server.url, transport=transport, timeout=20) as client,
            client.stream("GET", EXPORT_FULL, headers=identity) as response,
        ):
            assert response.status_code == 200
            started = time.monotonic()
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in response.iter_raw(1024):
                    time.sleep(0.01)  # a slow but steady reader
            assert time.monotonic() - started < 10
        assert eventually(lambda: server.export_connections_in_use() == 0)


def test_a_client_gone_before_the_first_byte_frees_the_snapshot_and_the_slot(
    db_url: str,
) -> None:
    key = _key(db_url)
    app = create_app(_settings(db_url, export_max_concurrent=1))

    async def vanishing_client() -> None:
        """The ASGI server's side when the socket closed before the response could start."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": EXPORT_FULL,
            "raw_path": EXPORT_FULL.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"x-api-key", key["X-API-Key"].encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, object]) -> None:
            if message["type"] == "http.response.start":
                raise OSError("client gone")

        with suppress(Exception):
            await app(scope, receive, send)

    with TestClient(app) as client:
        client.portal.call(vanishing_client)  # type: ignore[union-attr]
        database = app.state.database
        assert database.export_engine.pool.checkedout() == 0
        assert app.state.admission.exports_running == 0
        # The only slot is free again.
        assert client.get(EXPORT_FULL, headers=key).status_code == 200
