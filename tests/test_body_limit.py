"""Request bodies are capped before any route or credential check, under a real uvicorn.

Raw sockets show what an HTTP client library would hide: the 413 arrives while
the body is still unsent, and the server closes the connection instead of
reading the rest.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from reviewpoint.config import Settings, SettingsError, load_settings
from tests.conftest import LiveServer
from tests.data import bearer_headers, insert_user

LIMIT = 16 * 1024
USERS = "/api/v1/users"
API_KEYS = "/api/v1/api-keys"
TOO_LARGE = {"detail": f"Request body exceeds {LIMIT} bytes"}


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"max_body_bytes": LIMIT})) as live:
        yield live


def _connect(server: LiveServer) -> socket.socket:
    address = urlsplit(server.url)
    assert address.hostname is not None and address.port is not None
    return socket.create_connection((address.hostname, address.port), timeout=5)


def _read_until_closed(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response, read until the server closes."""
    data = b""
    for _ in range(1000):  # bounded: a 413 is a few hundred bytes
        piece = sock.recv(65536)  # the socket timeout fails a server that never answers
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, body


def _request_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _padded_key_request(size: int) -> bytes:
    body = json.dumps({"name": "nightly", "scopes": ["users:export"]}).encode()
    return body + b" " * (size - len(body))


def test_a_declared_oversize_body_is_413_before_any_of_it_is_sent(server: LiveServer):
    started = time.monotonic()
    with _connect(server) as sock:
        # 100 MiB announced, not one byte of it sent: the answer cannot wait for it.
        sock.sendall(_request_head(USERS, f"Content-Length: {100 * 1024 * 1024}"))
        status, headers, body = _read_until_closed(sock)
    assert status == 413
    assert json.loads(body) == TOO_LARGE
    assert headers["connection"] == "close"
    assert headers["cache-control"] == "no-store"
    assert "x-request-id" in headers
    assert time.monotonic() - started < 5


def test_a_declared_oversize_body_is_413_on_a_route_that_takes_no_body(server: LiveServer):
    with _connect(server) as sock:
        sock.sendall(_request_head("/api/v1/health", f"Content-Length: {LIMIT + 1}"))
        status, _, body = _read_until_closed(sock)
    assert status == 413
    assert json.loads(body) == TOO_LARGE


def test_a_chunked_body_is_413_as_soon_as_it_passes_the_limit(server: LiveServer):
    with _connect(server) as sock:
        sock.sendall(_request_head(USERS, "Transfer-Encoding: chunked"))
        for _ in range(LIMIT // 1024):
            sock.sendall(_chunk(b" " * 1024))
        # One byte over, and the body never ends: only counting can answer this.
        sock.sendall(_chunk(b" "))
        status, headers, body = _read_until_closed(sock)
    assert status == 413
    assert json.loads(body) == TOO_LARGE
    assert headers["connection"] == "close"


def test_a_chunked_body_of_exactly_the_limit_reaches_the_route(server: LiveServer):
    # Anonymous, so the route's own answer is the 401 it always gave.
    body = _padded_key_request(LIMIT)
    with _connect(server) as sock:
        sock.sendall(_request_head(API_KEYS, "Transfer-Encoding: chunked", "Connection: close"))
        for start in range(0, LIMIT, 1024):
            sock.sendall(_chunk(body[start : start + 1024]))
        sock.sendall(b"0\r\n\r\n")
        status, _, answer = _read_until_closed(sock)
    assert status == 401
    assert json.loads(answer) == {"detail": "Not authenticated"}


def test_a_body_at_the_limit_works_as_before(server: LiveServer, settings: Settings, db_url: str):
    admin = bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post(
            API_KEYS,
            content=_padded_key_request(LIMIT),
            headers={**admin, "Content-Type": "application/json"},
        )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "nightly"


def test_a_chunked_body_under_the_limit_works_as_before(
    server: LiveServer, settings: Settings, db_url: str
):
    admin = bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))
    padded = _padded_key_request(LIMIT - 1)
    # A generator has no length, so httpx sends it chunked.
    pieces = (padded[i : i + 1000] for i in range(0, len(padded), 1000))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post(
            API_KEYS, content=pieces, headers={**admin, "Content-Type": "application/json"}
        )
    assert response.status_code == 201, response.text


def test_an_oversize_body_is_413_for_an_admin_too(
    server: LiveServer, settings: Settings, db_url: str
):
    admin = bearer_headers(settings, insert_user(db_url, "admin@example.com", is_admin=True))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post(
            API_KEYS,
            content=_padded_key_request(LIMIT + 1),
            headers={**admin, "Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE


def test_the_default_limit_is_one_mebibyte():
    assert Settings(_env_file=None).max_body_bytes == 1024 * 1024  # type: ignore[call-arg]


def test_a_limit_of_zero_is_refused_at_start_up():
    with pytest.raises(SettingsError, match="REVIEWPOINT_MAX_BODY_BYTES"):
        load_settings(_env_file=None, max_body_bytes=0)
