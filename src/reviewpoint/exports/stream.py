"""Streaming an export: snapshot connections owned by the response body.

The snapshot is opened and the first chunk fetched *before* the response starts,
so a database that is down yields a clean 503 instead of a `200` that breaks off.
After that, a failure aborts the HTTP body (uvicorn closes the connection
without the terminating chunk, so clients see an incomplete download, never a
short file that looks complete), and is logged with the request id.

A client that hangs up cancels the body task; cleanup is shielded from
cancellation, lets the query in flight finish (`pipeline.py`), rolls the
transactions back and returns the connections to the pool intact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AsyncExitStack

import anyio
import anyio.lowlevel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from reviewpoint import compression
from reviewpoint.compression import ChunkCompressor
from reviewpoint.db import shared_snapshot
from reviewpoint.errors import (
    BUSY_RETRY_AFTER,
    AppError,
    ServiceUnavailable,
    is_database_unavailable,
)
from reviewpoint.exports import conditional, cursor
from reviewpoint.exports.anonymize import pseudonym_kinds
from reviewpoint.exports.attempt import ExportAttempt, Outcome
from reviewpoint.exports.pipeline import ChunkPipeline
from reviewpoint.exports.query import (
    Anonymized,
    Chunk,
    ChunkReader,
    PostgresChunks,
    SqliteChunks,
    count_rows,
    sqlite_setup,
)
from reviewpoint.exports.request import ExportRequest

log = logging.getLogger("reviewpoint.exports")


# A chunk goes out in pieces of this size, each given the send timeout: a client
# that takes less than this in REVIEWPOINT_EXPORT_SEND_TIMEOUT seconds is gone.
SEND_PIECE_BYTES = 64 * 1024


class ExportResponse(StreamingResponse):
    """The export's body, sent under two clocks, as its format's media type.

    A client that accepts no data for `send_timeout` seconds (a full socket
    buffer: it stopped reading) and an export running past `max_seconds` are
    cut off: the response ends without its final chunk, so the client sees an
    incomplete download, and the body is closed, which ends the snapshot.

    A client that accepts gzip gets each chunk compressed as it goes
    (`compression.py` says why here and not in the middleware).
    """

    # The default format's, for the OpenAPI schema; each response has its format's.
    media_type = "text/csv"

    def __init__(
        self,
        body: ExportBody,
        *,
        send_timeout: float,
        max_seconds: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            body,
            media_type=body.request.format.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{body.request.filename}"',
                # The records the snapshot holds for this export: clients can
                # tell a complete download from a cut one, and show progress.
                "X-Export-Rows": str(body.total_rows),
                # Where the snapshot stands in the change history (`cursor.py`).
                cursor.HEADER: cursor.encode(body.position),
                **(headers or {}),
            },
        )
        self.send_timeout = send_timeout
        self.max_seconds = max_seconds
        self.compressor: ChunkCompressor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        compressible = self.media_type not in compression.EXCLUDED_CONTENT_TYPES
        if compressible and compression.accepts_gzip(
            Headers(scope=scope).get("accept-encoding", "")
        ):
            self.compressor = ChunkCompressor()
            headers = MutableHeaders(raw=self.raw_headers)
            headers.add_vary_header("Accept-Encoding")
            # Also tells GZipMiddleware to leave this response alone; it adds
            # the Vary header itself to the uncompressed ones.
            headers["Content-Encoding"] = self.compressor.content_encoding
            if "etag" in headers:
                # Compressed bytes are not reproducible: the same content, a weak tag.
                headers["ETag"] = conditional.weaken(headers["etag"])
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            with anyio.move_on_after(self.max_seconds) as whole:
                async for chunk in self.body_iterator:
                    assert isinstance(chunk, bytes)
                    wire = (
                        chunk if self.compressor is None else await self.compressor.compress(chunk)
                    )
                    if not await self._send_in_pieces(send, wire):
                        self._body.cut_off(
                            f"the client accepted no data for {self.send_timeout:g} s"
                        )
                        return
                    # The file's bytes, whatever the encoding: comparable across clients.
                    self._body.attempt.bytes += len(chunk)
            if whole.cancelled_caught:
                self._body.cut_off(f"the export ran past {self.max_seconds:g} s")
                return
            last = b"" if self.compressor is None else self.compressor.finish()
            await send({"type": "http.response.body", "body": last, "more_body": False})
        finally:
            # However sending ended (done, cut off, the client gone, even before
            # the first byte), close the body now so the snapshot and slots end.
            with anyio.CancelScope(shield=True):
                await self._body.aclose()

    @property
    def _body(self) -> ExportBody:
        assert isinstance(self.body_iterator, ExportBody)
        return self.body_iterator

    async def _send_in_pieces(self, send: Send, chunk: bytes) -> bool:
        """Send one chunk; False if the client stalled past the send timeout."""
        for start in range(0, len(chunk), SEND_PIECE_BYTES):
            # A slice that covers the whole chunk is the chunk itself: no copy.
            piece = chunk[start : start + SEND_PIECE_BYTES]
            with anyio.move_on_after(self.send_timeout) as stalled:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            if stalled.cancelled_caught:
                return False
        return True


class _Export:
    """What a running export holds, released in one place however it ends."""

    def __init__(self, attempt: ExportAttempt) -> None:
        self.attempt = attempt
        self.stack = AsyncExitStack()
        self.connections: list[AsyncConnection] = []
        self.failed = False
        # How the body ended, once it has; None while streaming.
        self.outcome: Outcome | None = None
        self.detail: str | None = None

    async def _discard_if_failed(self) -> None:
        # After a failure a connection's state is unknown (a server that went away
        # under a COPY, which SQLAlchemy does not see): close it rather than roll
        # back on a dead socket and hand it to the next request. Failures are rare.
        if self.failed:
            for connection in self.connections:
                await connection.invalidate()

    async def open(self, engine: AsyncEngine, count: int) -> list[AsyncConnection]:
        self.connections = await self.stack.enter_async_context(shared_snapshot(engine, count))
        self.stack.push_async_callback(self._discard_if_failed)
        return self.connections

    async def release(self, request: ExportRequest) -> None:
        """Stop the readers, end the snapshot and return the connections, even if cancelled.

        Never raises: ending a read cannot lose data, and an error here (a
        rollback on a connection that just broke) must not replace the export's
        own outcome.
        """
        with anyio.CancelScope(shield=True):
            try:
                await self.stack.aclose()
            except Exception:
                log.warning(
                    "export %s: releasing its connections failed", request.filename, exc_info=True
                )


async def open_export(
    engine: AsyncEngine,
    request: ExportRequest,
    *,
    chunk_rows: int,
    connections: int,
    attempt: ExportAttempt,
    admission: AsyncExitStack,
) -> ExportBody:
    """Start an export and return its body; raises 503 if the database cannot serve.

    `connections` read chunks in parallel (PostgreSQL); an export that is one
    chunk at most (one address, a small limit) uses one. The records are
    counted in the same snapshot before any is read, and the snapshot's
    change number (its `X-Export-Cursor`) read before that. The export owns
    `admission` (its slots under the concurrency caps) and frees it last,
    however it ends.
    """
    filters = request.filters
    small = filters.email is not None or (filters.limit is not None and filters.limit <= chunk_rows)
    export = _Export(attempt)
    export.stack.push_async_callback(admission.aclose)
    try:
        first_connection, *others = await export.open(engine, 1 if small else connections)
        pipeline = ChunkPipeline(chunk_rows=chunk_rows, after=filters.after_id, limit=filters.limit)
        # Exits run last-in first-out: readers stop before their connections go.
        export.stack.push_async_callback(pipeline.close)
        sync = filters.since is not None
        if not sync:
            # The other connections read the first chunks while the first one counts.
            pipeline.start([await _reader(connection, request) for connection in others])
        # Before the count: a cursor ahead of the database is refused (409) first.
        position = await cursor.snapshot_position(first_connection, since=filters.since)
        total_rows = await count_rows(first_connection, filters)
        one_chunk = total_rows <= chunk_rows
        # The count covers every row left unless the limit cut it short. A sync
        # (usually a few rows) waits for it, so that none of its readers walks ids.
        fits = one_chunk and (filters.limit is None or total_rows < filters.limit)
        late = [first_connection, *others] if sync else [first_connection]
        pipeline.start([await _reader(c, request, one_chunk=one_chunk, fits=fits) for c in late])
        first = await pipeline.next()
    except BaseException as error:
        export.failed = True
        await export.release(request)
        if isinstance(error, Exception) and not isinstance(error, AppError):
            log.error("export %s could not start: %r", request.filename, error)
            # Only a database that cannot serve is a 503 (clients and load
            # balancers retry those); anything else is a fault of ours.
            if is_database_unavailable(error):
                raise ServiceUnavailable(
                    "Database unavailable; the export did not start",
                    retry_after=BUSY_RETRY_AFTER,
                ) from None
        raise
    await attempt.start_streaming()
    log.info(
        "export %s started by %s: %d rows",
        request.filename,
        _who(attempt),
        total_rows,
        extra=_fields(attempt),
    )
    return ExportBody(
        export,
        _body(export, pipeline, request, first, total_rows),
        request,
        total_rows,
        position=position,
    )


def _who(attempt: ExportAttempt) -> str:
    """The caller and the audit record, for log lines that tie back to the trail."""
    who = attempt.principal.label if attempt.principal else "?"
    return f"{who} (audit {attempt.audit_id})" if attempt.audit_id is not None else who


def _fields(attempt: ExportAttempt) -> dict[str, object]:
    """The audit record as a field of JSON log lines (logs.py), once there is one."""
    return {} if attempt.audit_id is None else {"audit_id": attempt.audit_id}


class ExportBody:
    """The response body; closing it releases the export even if it never started.

    An async generator that was never iterated skips its `finally` when closed,
    and a client can vanish before the first byte (the response start fails):
    without this its snapshot and admission slots would stay taken.
    """

    def __init__(
        self,
        export: _Export,
        chunks: AsyncGenerator[bytes],
        request: ExportRequest,
        total_rows: int,
        *,
        position: int,
    ) -> None:
        self._export = export
        self._chunks = chunks
        self.request = request
        self.total_rows = total_rows
        # The last change the snapshot sees: the export's X-Export-Cursor.
        self.position = position

    @property
    def attempt(self) -> ExportAttempt:
        return self._export.attempt

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    def cut_off(self, reason: str) -> None:
        """Sending stopped on the server's side (a stalled client, the time limit)."""
        log.warning(
            "export %s aborted: %s", self.request.filename, reason, extra=_fields(self.attempt)
        )
        self._export.outcome, self._export.detail = "aborted", reason

    async def aclose(self) -> None:
        await self._chunks.aclose()
        await self._export.release(self.request)  # a no-op once the body has released it
        # Still no outcome: the body was closed early, so the client went away.
        await self.attempt.finish(self._export.outcome or "aborted", detail=self._export.detail)


async def _reader(
    connection: AsyncConnection,
    request: ExportRequest,
    *,
    one_chunk: bool = False,
    fits: bool = False,
) -> ChunkReader:
    export_format, columns, options = request.format, request.spec.columns, request.options
    anonymized = None
    if request.anonymization is not None:
        anonymized = Anonymized(columns=columns, anonymization=request.anonymization)
        columns = pseudonym_kinds(columns)
    if connection.dialect.name == "postgresql":
        pg_rows = export_format.pg_rows(columns, options)
        return await PostgresChunks.on(
            connection, request.filters, pg_rows, fits=fits, anonymized=anonymized
        )
    sqlite_rows = export_format.sqlite_rows(columns, options)
    if anonymized is not None:
        await sqlite_setup(connection, anonymized)
    return SqliteChunks(
        connection,
        request.filters,
        sqlite_rows,
        one_chunk=one_chunk,
        fits=fits,
        anonymized=anonymized,
    )


async def _body(
    export: _Export,
    pipeline: ChunkPipeline,
    request: ExportRequest,
    chunk: Chunk | None,
    total_rows: int,
) -> AsyncGenerator[bytes]:
    started = time.perf_counter()
    attempt = export.attempt
    writer = request.format.writer(request.spec.columns, request.options, total_rows=total_rows)
    try:
        yield await writer.start()
        while chunk is not None:
            attempt.rows += chunk.rows
            yield await writer.add(chunk.body, chunk.rows)
            # A client hanging up cancels this task, but `send` does not await
            # once the client is gone and a chunk read ahead is returned at once:
            # take the cancellation here, or the export would run on.
            await anyio.lowlevel.checkpoint_if_cancelled()
            chunk = await pipeline.next()
        yield await writer.finish()
        export.outcome = export.outcome or "completed"
    except Exception as error:
        export.outcome, export.detail = "failed", f"database error: {type(error).__name__}"
        export.failed = True
        log.exception(
            "export %s failed after %d rows; response aborted",
            request.filename,
            attempt.rows,
            extra=_fields(attempt),
        )
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await writer.aclose()
        await export.release(request)
        log.info(
            "export %s %s by %s: %d rows in %.2fs",
            request.filename,
            export.outcome or "aborted",
            _who(attempt),
            attempt.rows,
            time.perf_counter() - started,
            extra=_fields(attempt),
        )
