"""Chunks read ahead, by one or more connections, handed out in id order.

While the response sends one chunk, the database is already building the next:
the export runs at the speed of the slower side, not the sum of both. With
several readers (PostgreSQL: connections sharing one snapshot) the database
builds several chunks at once, on several cores.

Each chunk's end is found before the chunk is read (`ChunkReader.chunk_end`,
cheap); that step is the only one taken in turn. At most two chunks per reader
are read ahead, so memory stays flat whatever the export's size.

A query is never cancelled halfway: a cancelled query leaves its connection in
an unknown state (SQLAlchemy then throws it away, and a SQLite connection
dropped that way keeps its read snapshot until garbage collection). `close`
asks the readers to stop and waits for the query in flight, one chunk at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from reviewpoint.exports.query import Chunk, ChunkReader


class ChunkPipeline:
    def __init__(self, readers: Sequence[ChunkReader]) -> None:
        self._readers = readers
        # One chunk in flight per reader, one more ready to send as soon as the
        # current one is out.
        self._ahead = 2 * len(readers)
        self._ready: dict[int, Chunk] = {}
        self._changed = asyncio.Condition()
        self._claim = asyncio.Lock()
        self._next_seq = 0  # the next chunk a reader will claim
        self._handed_out = 0  # the next chunk `next` will return
        self._after: int | None = 0  # where the next chunk starts; None: no more chunks
        self._closing = False
        self._error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(reader)) for reader in self._readers]

    async def next(self) -> Chunk | None:
        """The next chunk in id order; None after the last. Re-raises a reader's error."""
        async with self._changed:
            while True:
                if self._error is not None:
                    raise self._error
                chunk = self._ready.pop(self._handed_out, None)
                if chunk is not None:
                    self._handed_out += 1
                    self._changed.notify_all()
                    return chunk
                if self._after is None and self._handed_out == self._next_seq:
                    return None
                await self._changed.wait()

    async def close(self) -> None:
        """Stop reading and wait for the readers to finish their current query."""
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, reader: ChunkReader) -> None:
        try:
            while True:
                async with self._changed:
                    while not self._closing and self._next_seq - self._handed_out >= self._ahead:
                        await self._changed.wait()
                async with self._claim:
                    if self._closing or self._after is None:
                        return
                    seq, after = self._next_seq, self._after
                    end = await reader.chunk_end(after)
                    self._after, self._next_seq = end, seq + 1
                chunk = await reader.read(after, end)
                async with self._changed:
                    self._ready[seq] = chunk
                    self._changed.notify_all()
        except BaseException as error:
            # Cancelled too (server shutdown): `next` must not wait for a chunk
            # that will never come.
            async with self._changed:
                if self._error is None:
                    self._error = error
                self._closing = True
                self._changed.notify_all()
            if not isinstance(error, Exception):
                raise
