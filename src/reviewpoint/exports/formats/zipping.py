"""`stream_zip` fed from async code, on a thread of its own.

`stream_zip` pulls: it asks an iterator for each member's next bytes. An export
pushes: chunks come from the database when they come. A thread bridges the
two. `stream_zip` runs there, reading member data from a queue the export
fills, and hands back what it has zipped whenever it has caught up with the
queue, so at most one chunk is in its hands at a time. Deflating happens on
that thread too (zlib releases the GIL): off the event loop, on another core.

stream-zip's own `async_stream_zip` (0.0.84) is not used: its worker thread
pulls chunks through the event loop and, when a client hangs up mid-export,
would wait forever for a chunk the closed export never produces.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import zlib
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from stream_zip import ZIP_32, MemberFile, stream_zip

# Level 1 deflates sheet XML to about a twelfth of its size at ~150 MB/s on one
# core; level 6 (zlib's default) gains a tenth more for four times the time.
DEFLATE_LEVEL = 1
# stream_zip hands out output in pieces of this size.
OUTPUT_PIECE = 64 * 1024
FILE_MODE = 0o644


def compressor() -> zlib._Compress:
    return zlib.compressobj(level=DEFLATE_LEVEL, wbits=-zlib.MAX_WBITS)


@dataclass(frozen=True)
class _Member:
    name: str


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_END_MEMBER = _Marker("end of member")
_FINISH = _Marker("no more members")
_ABORT = _Marker("abort")


class _Aborted(Exception):
    pass


def zip_members(members: Iterator[MemberFile]) -> Iterator[bytes]:
    """The same zip, all at once (the reference encoder)."""
    return iter(stream_zip(members, chunk_size=OUTPUT_PIECE, get_compressobj=compressor))


class ZipPump:
    """A zip archive written member by member as data arrives; `write` returns what is ready."""

    def __init__(self, *, modified_at: datetime) -> None:
        self._loop = asyncio.get_running_loop()
        self._modified_at = modified_at
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        # Guards the hand-over: what is zipped, who waits, and the queue's
        # emptiness as the thread sees it (see `_take`).
        self._lock = threading.Lock()
        self._zipped: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name="zip-pump", daemon=True)
        self._thread.start()

    def open_member(self, name: str) -> None:
        self._inbox.put(_Member(name))

    def feed(self, data: bytes) -> None:
        """Queue data for the open member without waiting for it to be zipped."""
        if data:
            self._inbox.put(data)

    def close_member(self) -> None:
        self._inbox.put(_END_MEMBER)

    async def write(self, data: bytes) -> bytes:
        """Zip `data` into the open member; everything zipped since the last call."""
        return await self._exchange(data)

    async def finish(self) -> bytes:
        """End the archive (its central directory); the rest of its bytes."""
        zipped = await self._exchange(_FINISH)
        if not self._done:
            raise RuntimeError("the zip thread stopped before the archive was complete")
        return zipped

    def abort(self) -> None:
        """Stop the thread at its next step; nothing more will be read."""
        self._inbox.put(_ABORT)

    async def _exchange(self, item: object) -> bytes:
        waiter = self._loop.create_future()
        with self._lock:
            if self._failure is None and not self._done:
                self._waiter = waiter
                self._inbox.put(item)
            else:
                waiter.set_result(None)
        await waiter
        with self._lock:
            zipped, self._zipped = self._zipped, []
            failure = self._failure
        if failure is not None:
            raise failure
        return b"".join(zipped)

    # --- on the thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            for piece in stream_zip(
                self._members(), chunk_size=OUTPUT_PIECE, get_compressobj=compressor
            ):
                with self._lock:
                    self._zipped.append(piece)
        except _Aborted:
            return
        except BaseException as error:
            with self._lock:
                self._failure = error
                self._wake()
            return
        with self._lock:
            self._done = True
            self._wake()

    def _take(self) -> object:
        """The next item; first wakes the waiting `write` if the queue is empty.

        The emptiness test and `_exchange`'s "set the waiter, queue the item"
        happen under one lock: the thread never wakes a waiter whose item it
        has not zipped yet.
        """
        with self._lock:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                self._wake()
                item = None
        if item is None:
            item = self._inbox.get()
        if item is _ABORT:
            raise _Aborted
        return item

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            # A closed event loop (the server stopped) has nobody waiting.
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, waiter)

    def _members(self) -> Iterator[MemberFile]:
        while True:
            item = self._take()
            if item is _FINISH:
                return
            assert isinstance(item, _Member), item
            yield item.name, self._modified_at, FILE_MODE, ZIP_32, self._data()

    def _data(self) -> Iterator[bytes]:
        while True:
            item = self._take()
            if item is _END_MEMBER:
                return
            assert isinstance(item, bytes), item
            yield item


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
