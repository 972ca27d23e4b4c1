"""Fixtures of the real-server export tests: tight socket buffers and the app's log."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer
from tests.exports.live import SMALL_BUFFER


@pytest.fixture
def tight_server(live_server: LiveServer) -> LiveServer:
    """The live server, its accepted connections with a small kernel send buffer."""
    live_server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    return live_server


@pytest.fixture
def tight_client(tight_server: LiveServer) -> Iterator[httpx.Client]:
    """A client with a small receive buffer: the server can run only ~200 kB ahead of it.

    It asks for the body uncompressed, so the raw bytes are the export itself and the
    buffers hold what the tests expect (gzip: tests/test_compression.py).
    """
    transport = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)]
    )
    with httpx.Client(
        base_url=tight_server.url,
        transport=transport,
        timeout=20,
        headers={"Accept-Encoding": "identity"},
    ) as client:
        yield client


@pytest.fixture
def app_log(live_server: LiveServer) -> Iterator[io.StringIO]:
    """The lines the app's own log handler writes (its format, with request ids)."""
    buffer = io.StringIO()
    handlers = [
        handler
        for handler in logging.getLogger("reviewpoint").handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    assert handlers, "create_app should have configured a log handler"
    previous = [handler.setStream(buffer) for handler in handlers]
    yield buffer
    for handler, stream_before in zip(handlers, previous, strict=True):
        if stream_before is not None:
            handler.setStream(stream_before)
