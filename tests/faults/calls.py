"""The calls every fault test makes, and what a refused one must look like.

One of each kind of route: an export (API key), the admin API (bearer token),
a login (a write: `last_login_at`) and readiness.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from reviewpoint.config import Settings, load_settings
from tests.conftest import LiveServer
from tests.data import BULK_PASSWORD, bearer_headers, create_api_key, insert_user

EXPORT_FULL = "/api/v1/users/export-full"
USERS = "/api/v1/users"
LOGIN = "/api/v1/auth/login"
READY = "/api/v1/health/ready"
ADMIN_EMAIL = "admin@example.com"


def fault_settings(db_url: str, **overrides: object) -> Settings:
    """Settings of a server under test; limits out of the way unless a test sets them."""
    values: dict[str, object] = {
        "env": "test",
        "db_url": db_url,
        "log_level": "error",
        "jwt_secret_key": secrets.token_urlsafe(32),
        "export_rate_limit": "1000/minute",
        "login_rate_limit": "1000/minute",
        "export_max_concurrent_per_credential": 4,
        **overrides,
    }
    return load_settings(_env_file=None, **values)


@dataclass(frozen=True)
class Callers:
    """Credentials made straight in the database, before any fault."""

    key: dict[str, str]
    admin: dict[str, str]

    @classmethod
    def made_in(cls, db_url: str, settings: Settings) -> Callers:
        admin_id = insert_user(db_url, ADMIN_EMAIL, is_admin=True)
        _, secret = create_api_key(db_url, ["users:export_full"])
        return cls(key={"X-API-Key": secret}, admin=bearer_headers(settings, admin_id))

    def each_route(self, client: httpx.Client) -> dict[str, httpx.Response]:
        return {
            "export": client.get(EXPORT_FULL, headers=self.key),
            "admin": client.get(USERS, headers=self.admin),
            "login": client.post(LOGIN, data={"username": ADMIN_EMAIL, "password": BULK_PASSWORD}),
            "ready": client.get(READY),
        }


@dataclass(frozen=True)
class Live:
    """A real server under test, a client of it, and the credentials it accepts."""

    server: LiveServer
    client: httpx.Client
    callers: Callers

    def each_route(self) -> dict[str, httpx.Response]:
        return self.callers.each_route(self.client)


@contextmanager
def live_server_on(
    db_url: str, *, made_in: str | None = None, **overrides: object
) -> Iterator[Live]:
    """A server on `db_url`, whose credentials are made in `made_in` (the same
    database reached directly, where `db_url` goes through a fault) beforehand."""
    settings = fault_settings(db_url, **overrides)
    callers = Callers.made_in(made_in or db_url, settings)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield Live(server, client, callers)


def assert_retry_later(
    response: httpx.Response, detail: str, *, retry_after: int | None = None
) -> None:
    """A refusal a client and a balancer can act on: 503, JSON detail, Retry-After."""
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": detail}
    assert int(response.headers["Retry-After"]) >= 1
    if retry_after is not None:
        assert response.headers["Retry-After"] == str(retry_after)


def assert_served(responses: dict[str, httpx.Response]) -> None:
    assert {name: r.status_code for name, r in responses.items()} == dict.fromkeys(
        responses, 200
    ), {name: r.text[:200] for name, r in responses.items()}
    assert ADMIN_EMAIL in responses["export"].text
    assert responses["login"].json()["access_token"]


# Socket buffers small enough that the server stays about 100 kB ahead of the reader.
BUFFER = 32 * 1024


def slow_reading_client(server: LiveServer) -> httpx.Client:
    """A client of `server` that the export can run only ~100 kB ahead of, so a
    fault injected after the first bytes lands while the export still streams."""
    server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)])
    return httpx.Client(
        base_url=server.url,
        transport=transport,
        timeout=20,
        headers={"Accept-Encoding": "identity"},
    )
