"""Chunks read ahead, by one or more connections, handed out in id order.

While the response sends one chunk, the database is already building the next:
the export runs at the speed of the slower side, not the sum of both. With
several readers (PostgreSQL: connections sharing one snapshot) the database
builds several chunks at once, on several cores.

Each chunk's end is found before the chunk is read (`ChunkReader.chunk_end`,
cheap); that step is the only one taken in turn, and it is where a `limit` is
kept exactly: the chunk that reaches it is cut there and is the last. At most two chunks per reader
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
    def __init__(self, *, chunk_rows: int, after: int = 0, limit: int | None = None) -> None:
        self._chunk_rows = chunk_rows
        self._left = limit  # rows the limit still allows; None: no limit
        self._ready: dict[int, Chunk] = {}
        self._changed = asyncio.Condition()
        self._claim = asyncio.Lock()
        self._next_seq = 0  # the next chunk a reader will claim
        self._handed_out = 0  # the next chunk `next` will return
        self._after: int | None = after  # where the next chunk starts; None: no more chunks
        self._closing = False
        self._error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, readers: Sequence[ChunkReader]) -> None:
        """Read chunks on `readers`; a later call adds readers whose connections were busy."""
        for reader in readers:
            self._tasks.append(asyncio.create_task(self._run(reader)))

    @property
    def _ahead(self) -> int:
        # One chunk in flight per reader, one more ready to send as soon as the
        # current one is out.
        return 2 * len(self._tasks)

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

    async def _claim_chunk(self, reader: ChunkReader, after: int) -> tuple[int | None, int | None]:
        """The end of the chunk after `after` and where the next one starts (None: none)."""
        rows = self._chunk_rows if self._left is None else min(self._chunk_rows, self._left)
        if rows == 0:
            return after, None  # the limit was reached exactly: an empty last chunk
        end = await reader.chunk_end(after, rows)
        if end is None:
            return None, None  # fewer than `rows` left: this chunk reads them all
        if self._left is not None:
            self._left -= rows
            if self._left == 0:
                return end, None
        return end, end

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
                    end, self._after = await self._claim_chunk(reader, after)
                    self._next_seq = seq + 1
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
