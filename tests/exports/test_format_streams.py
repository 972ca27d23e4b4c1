"""Every format streams with the CSV's guarantees, through a real uvicorn server.

A client that hangs up mid-download ends the export: its snapshot connections
go back to the pool, no database session stays in a transaction, and the XLSX
zip thread stops. A complete download of the same export follows, whole.
"""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import threading

import httpx
import pytest

from reviewpoint.config import Settings, load_settings
from tests.conftest import LiveServer, eventually
from tests.data import create_api_key, insert_users
from tests.exports.hostile import HOSTILE_NAMES
from tests.exports.live import SMALL_BUFFER, app_backends

EXPORT_FULL = "/api/v1/users/export-full"
USERS = 20_000
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Small chunks (a long stream from a few thousand rows), info logs, no admission limits."""
    return load_settings(
        _env_file=None,
        env="test",
        db_url=db_url,
        log_level="info",
        export_chunk_rows=100,
        export_rate_limit="10000/minute",
        export_max_concurrent_per_credential=10,
        export_max_concurrent=4,
    )


def _zip_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "zip-pump"]


@pytest.mark.parametrize("format_name", ["ndjson", "json", "xlsx"])
def test_a_client_cut_mid_stream_releases_the_export(
    tight_server: LiveServer, db_url: str, app_log: io.StringIO, format_name: str
) -> None:
    insert_users(db_url, [(f"user{i}@example.com", f'User {i}, "{i}"') for i in range(USERS)])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    transport = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)]
    )
    params = {"format": format_name}
    # Uncompressed, so the raw bytes are the export's own (gzip: tests/test_compression.py).
    with httpx.Client(
        base_url=tight_server.url, transport=transport, timeout=20, headers=IDENTITY
    ) as client:
        with client.stream("GET", EXPORT_FULL, params=params, headers=key) as response:
            assert response.status_code == 200
            received = b""
            for piece in response.iter_raw():
                received += piece
                if len(received) >= 16 * 1024:
                    break
        # The stream is closed with most of the export unsent.
        assert eventually(lambda: tight_server.export_connections_in_use() == 0)
        aborted = rf"export users_full_export\.{format_name} aborted by"
        assert eventually(lambda: re.search(aborted, app_log.getvalue()) is not None), (
            app_log.getvalue()
        )
        assert "completed" not in app_log.getvalue()
        assert "failed" not in app_log.getvalue()
        assert eventually(lambda: not _zip_threads())
        if db_url.startswith("postgresql"):
            assert eventually(lambda: not app_backends(db_url)), app_backends(db_url)

        whole = client.get(EXPORT_FULL, params=params, headers=key)
    assert whole.status_code == 200
    assert int(whole.headers["X-Export-Rows"]) == USERS
    assert eventually(lambda: not _zip_threads())


def _records(format_name: str, body: bytes) -> list[list[str]]:
    """Each record as its fields' text, the last one possibly cut short."""
    text = body.decode("utf-8", errors="ignore")
    if format_name == "csv":
        return list(csv.reader(io.StringIO(text, newline="")))[1:]
    return [[line] for line in text.removesuffix("\n").split("\n")]


def _record_id(format_name: str, record: list[str]) -> int:
    return int(record[0]) if format_name == "csv" else int(json.loads(record[0])["id"])


@pytest.mark.parametrize("format_name", ["csv", "ndjson"])
def test_after_id_resumes_a_cut_export_with_no_gap_and_no_duplicate(
    tight_server: LiveServer, db_url: str, format_name: str
) -> None:
    names = [HOSTILE_NAMES[i % len(HOSTILE_NAMES)] for i in range(USERS)]
    insert_users(db_url, [(f"user{i}@example.com", name) for i, name in enumerate(names)])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    transport = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)]
    )
    params = {"format": format_name}
    # Uncompressed, so the raw bytes are the export's own (gzip: tests/test_compression.py).
    with httpx.Client(
        base_url=tight_server.url, transport=transport, timeout=20, headers=IDENTITY
    ) as client:
        whole = client.get(EXPORT_FULL, params=params, headers=key).content
        with client.stream("GET", EXPORT_FULL, params=params, headers=key) as response:
            received = b""
            for piece in response.iter_raw():
                received += piece
                if len(received) >= 64 * 1024:
                    break
        # The last record may be cut short: a client keeps the ones before it.
        kept = _records(format_name, received)[:-1]
        last_id = _record_id(format_name, kept[-1])
        rest = client.get(EXPORT_FULL, params={**params, "after_id": str(last_id)}, headers=key)
    assert int(rest.headers["X-Export-Rows"]) == USERS - len(kept)
    resumed = kept + _records(format_name, rest.content)
    expected = _records(format_name, whole)
    assert len(kept) < len(expected) / 2, "the first download was not cut"
    assert resumed == expected
    ids = [_record_id(format_name, record) for record in resumed]
    assert len(ids) == len(set(ids)) == USERS
