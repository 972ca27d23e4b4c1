"""gzip for clients that ask for it (`Accept-Encoding: gzip`), streamed exports included.

Two places compress, each where it is cheapest:

- Exports compress themselves (`ExportResponse`, through `ChunkCompressor`):
  each chunk of rows the database returns (about 1 MB of CSV at 10,000 rows)
  is compressed on a worker thread as one unit and ended with a sync flush, so
  the client can decompress everything it has so far. zlib lets go of the GIL
  while it works, so the event loop keeps serving logins, probes and other
  exports meanwhile; at most one thread per core compresses at once, and an
  export whose chunk waits for one waits like a slow client, not on the loop.
  An export cut off mid-stream never sends the gzip trailer, so a cut
  download fails to decompress instead of looking complete.
- Every other response of at least `MINIMUM_SIZE` bytes goes through
  Starlette's `GZipMiddleware` (user listings, audit pages, the schema).

Why not the middleware for exports too: it compresses each 64 KiB piece an
export sends as its own unit, and below its thread threshold (128 KiB) on the
event loop itself. Under `make loadtest` on PostgreSQL that made the storm's
exports p99 14.4 s and readiness p99 382 ms, where identity passed with 2.7 s
and 195 ms (README "Compression").

Level 1: on the seeded 1,000,000-user full export it compresses about 10x,
while higher levels cost up to twice the CPU for a few percent more (measured
figures in README "Compression"); an export must stay within 1.5x of its
uncompressed time.

Every response is compressed on request, JSON included: credentials travel in
headers, never in cookies, so a third-party page cannot make an authenticated
request and watch the compressed size (BREACH).
"""

from __future__ import annotations

import os
import zlib

import anyio.lowlevel
import anyio.to_thread
from starlette.datastructures import Headers
from starlette.middleware.gzip import (
    DEFAULT_EXCLUDED_CONTENT_TYPES,
    GZipMiddleware,
    IdentityResponder,
)
from starlette.types import ASGIApp, Receive, Scope, Send

LEVEL = 1
# Below this, gzip's own header and trailer (18 bytes) and the CPU are not
# worth it: a login token, an error, a short page of users.
MINIMUM_SIZE = 1024
# A workbook is already a zip archive (the xlsx export format).
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
EXCLUDED_CONTENT_TYPES = (*DEFAULT_EXCLUDED_CONTENT_TYPES, XLSX)
# A piece this small compresses in microseconds: on the loop, no thread hop.
THREAD_MINIMUM_SIZE = 16 * 1024
# gzip's container around raw deflate (zlib's wbits convention).
_GZIP_WBITS = 16 + zlib.MAX_WBITS

_threads: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("gzip_threads")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an `Accept-Encoding` value admits gzip (RFC 9110 12.5.3).

    `gzip;q=0` refuses it; `*` with a non-zero weight admits it unless gzip
    itself is refused.
    """
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, parameters = item.partition(";")
        weight = 1.0
        name, _, value = parameters.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value)
            except ValueError:
                weight = 0.0
        weights[coding.strip().lower()] = weight
    for coding in ("gzip", "x-gzip"):
        if coding in weights:
            return weights[coding] > 0
    return weights.get("*", 0.0) > 0


def _compression_threads() -> anyio.CapacityLimiter:
    """One compressing thread per core in this process: more would only queue in the kernel."""
    try:
        return _threads.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
        _threads.set(limiter)
        return limiter


class ChunkCompressor:
    """One gzip stream, fed a chunk at a time, each flushed so the client can read it."""

    content_encoding = "gzip"

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(LEVEL, zlib.DEFLATED, _GZIP_WBITS)

    async def compress(self, chunk: bytes) -> bytes:
        if len(chunk) < THREAD_MINIMUM_SIZE:
            return self._sync_flushed(chunk)
        return await anyio.to_thread.run_sync(
            self._sync_flushed, chunk, limiter=_compression_threads()
        )

    def finish(self) -> bytes:
        """The end of the stream: what is buffered, then the trailer (CRC and length)."""
        return self._zlib.flush(zlib.Z_FINISH)

    def _sync_flushed(self, chunk: bytes) -> bytes:
        return self._zlib.compress(chunk) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class GzipWhenAccepted:
    """Starlette's `GZipMiddleware`, entered only when the client really accepts gzip.

    Starlette looks for the substring "gzip" in `Accept-Encoding`, so it
    would compress for `gzip;q=0`, which refuses it; `accepts_gzip` reads the
    weights. Other clients get Starlette's identity responder, which sends
    the body as it is and still says `Vary: Accept-Encoding`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(
            app,
            minimum_size=MINIMUM_SIZE,
            compresslevel=LEVEL,
            exclude_content_types=EXCLUDED_CONTENT_TYPES,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and accepts_gzip(
            Headers(scope=scope).get("accept-encoding", "")
        ):
            await self.gzip(scope, receive, send)
        elif scope["type"] == "http":
            identity = IdentityResponder(
                self.app, MINIMUM_SIZE, exclude_content_types=EXCLUDED_CONTENT_TYPES
            )
            await identity(scope, receive, send)
        else:
            await self.app(scope, receive, send)
