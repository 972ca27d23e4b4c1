"""gzip on request (`Accept-Encoding: gzip`): the same bytes, compressed while streaming."""

from __future__ import annotations

import gzip
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from reviewpoint.config import Settings
from reviewpoint.exports import cursor
from tests.conftest import LiveServer, eventually
from tests.data import bearer_headers, create_api_key, insert_user, insert_users
from tests.exports.test_export_csv import HOSTILE_NAMES

EXPORT_FULL = "/api/v1/users/export-full"
EXPORT_MINIMAL = "/api/v1/users/export"
GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Exports of a few thousand rows that still span many chunks, back to back."""
    return settings.model_copy(
        update={
            "export_chunk_rows": 100,
            "export_rate_limit": "10000/minute",
            "export_max_concurrent_per_credential": 10,
        }
    )


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


@pytest.fixture
def users(db_url: str) -> None:
    rows = [(f"user{n}@example.com", HOSTILE_NAMES[n % len(HOSTILE_NAMES)]) for n in range(3000)]
    insert_users(db_url, rows)


def _raw(
    client: TestClient | httpx.Client, path: str, headers: dict[str, str], **params: str
) -> tuple[httpx.Response, bytes]:
    """The response and its body as sent, before any decoding by the client."""
    with client.stream("GET", path, headers=headers, params=params) as response:
        return response, b"".join(response.iter_raw())


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (EXPORT_MINIMAL, {}),
        (EXPORT_FULL, {}),
        (EXPORT_FULL, {"cursor": cursor.encode(0)}),
        (EXPORT_FULL, {"format": "ndjson"}),
        (EXPORT_MINIMAL, {"format": "json"}),
        (EXPORT_FULL, {"format": "ndjson", "cursor": cursor.encode(0)}),
    ],
    ids=["minimal", "full", "full-sync", "full-ndjson", "minimal-json", "sync-ndjson"],
)
def test_a_gzipped_export_decompresses_to_the_plain_bytes(
    client: TestClient,
    users: None,
    full_key: dict[str, str],
    path: str,
    params: dict[str, str],
) -> None:
    plain, plain_body = _raw(client, path, {**full_key, **IDENTITY}, **params)
    packed, packed_body = _raw(client, path, {**full_key, **GZIP}, **params)
    assert plain.status_code == packed.status_code == 200
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert gzip.decompress(packed_body) == plain_body
    assert len(packed_body) < len(plain_body) / 3


def test_a_gzipped_export_keeps_its_headers_and_says_it_varies(
    client: TestClient, users: None, full_key: dict[str, str]
) -> None:
    response, _ = _raw(client, EXPORT_FULL, {**full_key, **GZIP, "X-Request-ID": "gz-1"})
    headers = response.headers
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert headers["content-disposition"] == 'attachment; filename="users_full_export.csv"'
    assert headers["vary"] == "Accept-Encoding"
    assert headers["x-request-id"] == "gz-1"
    assert headers["cache-control"] == "no-store"
    assert cursor.HEADER in headers
    assert headers["x-export-rows"] == "3000"
    assert "RateLimit" in headers
    # A length would be the compressed one, unknown until the end: the body is chunked.
    assert "content-length" not in headers


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("br, gzip;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("gzip;q=0", False),
        ("*, gzip;q=0", False),
        ("br, zstd", False),
        ("*;q=0", False),
        ("identity", False),
        ("", False),
    ],
)
def test_an_export_is_gzipped_exactly_when_the_client_accepts_gzip(
    client: TestClient, users: None, full_key: dict[str, str], accept_encoding: str, gzipped: bool
) -> None:
    _, plain_body = _raw(client, EXPORT_MINIMAL, {**full_key, **IDENTITY})
    response, body = _raw(client, EXPORT_MINIMAL, {**full_key, "Accept-Encoding": accept_encoding})
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == ("gzip" if gzipped else None)
    assert (gzip.decompress(body) if gzipped else body) == plain_body


def test_export_bytes_are_counted_before_compression(
    client: TestClient, db_url: str, users: None, settings: Settings
) -> None:
    """The audit trail records the file's size, the same whatever the encoding."""
    admin = bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))
    _, plain_body = _raw(client, EXPORT_FULL, {**admin, **IDENTITY})
    _raw(client, EXPORT_FULL, {**admin, **GZIP})
    records = client.get("/api/v1/exports/audit", headers=admin).json()["data"]
    assert [record["bytes"] for record in records[:2]] == [len(plain_body)] * 2


def test_an_xlsx_export_is_never_gzipped_it_is_a_zip_already(
    client: TestClient, users: None, full_key: dict[str, str]
) -> None:
    response, body = _raw(client, EXPORT_FULL, {**full_key, **GZIP}, format="xlsx")
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert body.startswith(b"PK\x03\x04")
    assert response.headers["x-export-rows"] == "3000"
    assert cursor.HEADER in response.headers


def test_an_uncompressed_export_also_says_it_varies(
    client: TestClient, users: None, full_key: dict[str, str]
) -> None:
    response, _ = _raw(client, EXPORT_FULL, {**full_key, **IDENTITY})
    assert response.headers["vary"] == "Accept-Encoding"


def test_large_json_is_compressed_and_small_responses_are_not(
    client: TestClient, db_url: str, users: None, settings: Settings
) -> None:
    admin = bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))
    page, body = _raw(client, "/api/v1/users", {**admin, **GZIP}, limit="500")
    assert page.headers["content-encoding"] == "gzip"
    assert len(gzip.decompress(body)) > 10 * 1024
    health, body = _raw(client, "/api/v1/health", GZIP)
    assert "content-encoding" not in health.headers
    assert health.status_code == 200
    refused, body = _raw(client, EXPORT_FULL, GZIP)
    assert refused.status_code == 401
    assert "content-encoding" not in refused.headers


# --- over a real server ------------------------------------------------------------


SMALL_BUFFER = 16 * 1024


def _tighten(server: LiveServer) -> LiveServer:
    """Small kernel send buffers on the server's connections (loopback's hold megabytes)."""
    server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    return server


@pytest.fixture
def slow_reader(live_server: LiveServer) -> Iterator[httpx.Client]:
    """A client with a small receive buffer, so the server cannot run far ahead of it."""
    _tighten(live_server)
    transport = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)]
    )
    with httpx.Client(base_url=live_server.url, transport=transport, timeout=20) as client:
        yield client


def test_curl_compressed_output_equals_the_plain_bytes(
    live_server: LiveServer, users: None, full_key: dict[str, str]
) -> None:
    def curl(*options: str) -> bytes:
        command = ["curl", "-sS", "--fail", *options, "-H", f"X-API-Key: {full_key['X-API-Key']}"]
        return subprocess.run(
            [*command, live_server.url + EXPORT_FULL], capture_output=True, check=True
        ).stdout

    plain = curl()
    assert plain.count(b"@example.com") == 3000
    assert curl("--compressed") == plain
    assert gzip.decompress(curl("-H", "Accept-Encoding: gzip")) == plain


def test_compressed_bytes_arrive_while_the_export_streams_and_decompress_as_they_come(
    slow_reader: httpx.Client, db_url: str, full_key: dict[str, str]
) -> None:
    """Each piece is flushed: what has arrived decompresses to a prefix of the CSV."""
    insert_users(db_url, [(f"u{n}@example.com", f"User {n}") for n in range(30_000)])
    plain = slow_reader.get(EXPORT_FULL, headers={**full_key, **IDENTITY}).content
    with slow_reader.stream("GET", EXPORT_FULL, headers={**full_key, **GZIP}) as response:
        assert response.headers["content-encoding"] == "gzip"
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        so_far = b""
        pieces = response.iter_raw()
        while len(so_far) < 100_000:
            so_far += decompressor.decompress(next(pieces))
        assert plain.startswith(so_far)
        assert not decompressor.eof
        rest = b"".join(decompressor.decompress(piece) for piece in pieces)
    assert so_far + rest == plain
    assert decompressor.eof


@pytest.mark.timing
def test_a_cut_compressed_download_releases_its_connections_and_never_looks_complete(
    live_server: LiveServer, slow_reader: httpx.Client, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(db_url, [(f"u{n}@example.com", f"User {n}") for n in range(30_000)])
    for _ in range(5):
        with slow_reader.stream("GET", EXPORT_FULL, headers={**full_key, **GZIP}) as response:
            assert response.status_code == 200
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            received = decompressor.decompress(next(response.iter_raw()))
            assert received.startswith(b"id,email,name,")
            # Hanging up mid-export: the gzip stream has no end, so it cannot pass as whole.
            assert live_server.export_connections_in_use() >= 1
            assert not decompressor.eof
    assert eventually(lambda: live_server.export_connections_in_use() == 0), (
        "export connections leaked"
    )
    # And the server still serves a complete, decodable export.
    whole = slow_reader.get(EXPORT_FULL, headers={**full_key, **GZIP})
    assert whole.content.count(b"\r\n") == 30_001


def test_a_download_cut_by_the_server_fails_to_decompress(
    db_url: str, full_key: dict[str, str], settings: Settings
) -> None:
    """An export stopped by its time limit ends without the gzip trailer."""
    insert_users(db_url, [(f"u{n}@example.com", f"User {n}") for n in range(30_000)])
    limited = settings.model_copy(update={"export_max_seconds": 0.5})
    transport = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)]
    )
    with (
        LiveServer(limited) as server,
        httpx.Client(base_url=_tighten(server).url, transport=transport, timeout=20) as client,
        client.stream("GET", EXPORT_FULL, headers={**full_key, **GZIP}) as response,
    ):
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in response.iter_raw(512):
                decompressor.decompress(piece)
                time.sleep(0.005)
        assert not decompressor.eof
