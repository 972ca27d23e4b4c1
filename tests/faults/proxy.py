"""A loopback TCP relay in front of the real PostgreSQL that a test can break.

Stopping the machine's PostgreSQL would break every other test running against
it; a relay the server under test connects through breaks only that server's
view of it, in milliseconds, and comes back on the same port.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.engine import make_url


class TcpProxy:
    """Relays 127.0.0.1:`port` to `target`; `down`, `cut` and `up` are the faults.

    - `down()`: the listener closes and every relayed connection is reset, as
      when the database host goes away: new connections are refused.
    - `cut()`: relayed connections are reset but new ones are accepted, as when
      a network path drops mid-query.
    - `freeze()`: nothing is relayed any more, either way, and new connections
      are accepted but never answered, as when packets to the host are dropped.
    - `up()`: listens again on the same port, relays again.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        # Connections accepted since the relay started: each is one the server opened.
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._relayed: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None

    @classmethod
    def to_database(cls, db_url: str) -> TcpProxy:
        url = make_url(db_url)
        return cls(url.host or "127.0.0.1", url.port or 5432)

    def url_through(self, db_url: str) -> str:
        """`db_url` with its host and port replaced by this relay's."""
        url = make_url(db_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def up(self) -> None:
        self._run(self._listen())

    def freeze(self) -> None:
        self._run(self._freeze())

    def down(self) -> None:
        self._run(self._close(listener=True))

    def cut(self) -> None:
        self._run(self._close(listener=False))

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=5)

    async def _freeze(self) -> None:
        assert self._flowing is not None
        self._flowing.clear()

    async def _listen(self) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
        self._flowing.set()
        if self._server is None:
            self._server = await asyncio.start_server(
                self._relay, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self, *, listener: bool) -> None:
        if listener and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._relayed):
            writer.transport.abort()
        self._relayed.clear()

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        assert self._flowing is not None
        await self._flowing.wait()
        try:
            server_in, server_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.transport.abort()
            return
        pair = {client_out, server_out}
        self._relayed |= pair
        await asyncio.gather(
            _pipe(client_in, server_out, self._flowing),
            _pipe(server_in, client_out, self._flowing),
            return_exceptions=True,
        )
        for writer in pair:
            writer.transport.abort()
        self._relayed -= pair


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
) -> None:
    while data := await reader.read(65536):
        await flowing.wait()
        writer.write(data)
        await writer.drain()
    writer.transport.abort()
