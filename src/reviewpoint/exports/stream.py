"""Streaming an export: one snapshot connection, owned by the response body.

The snapshot is opened and the first chunk fetched *before* the response starts,
so a database that is down yields a clean 503 instead of a `200` that breaks off.
After that, a failure aborts the HTTP body (uvicorn closes the connection
without the terminating chunk, so clients see an incomplete download, never a
short file that looks complete), and is logged with the request id.

A client that hangs up cancels the body task between chunk queries, never
inside one, and cleanup is shielded from cancellation: the transaction is rolled
back and the connection goes back to the pool intact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import anyio.lowlevel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.responses import StreamingResponse
from starlette.types import Send

from reviewpoint.db import snapshot
from reviewpoint.errors import ServiceUnavailable
from reviewpoint.exports.encoders import CsvEncoder, ExportSpec
from reviewpoint.exports.query import Chunk, fetch_chunk

log = logging.getLogger("reviewpoint.exports")


class CsvStreamingResponse(StreamingResponse):
    media_type = "text/csv"

    def __init__(self, body: AsyncIterator[bytes], *, filename: str) -> None:
        super().__init__(
            body, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            # Starlette leaves a body suspended at `yield` to the garbage
            # collector when sending fails; close it now so the snapshot ends.
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


async def open_export(
    engine: AsyncEngine,
    spec: ExportSpec,
    *,
    email: str | None,
    chunk_rows: int,
    audit: str,
) -> AsyncIterator[bytes]:
    """Start an export and return its body; raises 503 if it cannot start."""
    stack = AsyncExitStack()
    try:
        connection = await stack.enter_async_context(snapshot(engine))
        first = await fetch_chunk(connection, spec, after_id=0, limit=chunk_rows, email=email)
    except BaseException as error:
        await _release(stack, spec)
        if isinstance(error, Exception):
            log.error("export %s could not start: %r", spec.filename, error)
            raise ServiceUnavailable("Database unavailable; the export did not start") from None
        raise
    log.info("export %s started by %s", spec.filename, audit)
    return _body(stack, connection, spec, first, email=email, chunk_rows=chunk_rows, audit=audit)


async def _release(stack: AsyncExitStack, spec: ExportSpec) -> None:
    """End the snapshot and return its connection, even while being cancelled.

    Never raises: ending a read cannot lose data, and an error here (a rollback
    on a connection that just broke) must not replace the export's own outcome.
    """
    with anyio.CancelScope(shield=True):
        try:
            await stack.aclose()
        except Exception:
            log.warning("export %s: releasing its connection failed", spec.filename, exc_info=True)


async def _body(
    stack: AsyncExitStack,
    connection: AsyncConnection,
    spec: ExportSpec,
    chunk: Chunk | None,
    *,
    email: str | None,
    chunk_rows: int,
    audit: str,
) -> AsyncIterator[bytes]:
    started = time.perf_counter()
    rows = 0
    outcome = "aborted"
    try:
        yield CsvEncoder(spec).header()
        while chunk is not None:
            rows += chunk.rows
            yield chunk.body.encode("utf-8")
            if chunk.rows < chunk_rows:
                break
            # A client hanging up cancels this task. Never mid-query: a cancelled
            # query leaves the connection in an unknown state, so SQLAlchemy throws
            # it away, and a SQLite connection dropped that way keeps its read
            # snapshot (WAL checkpoints stay blocked) until garbage collection.
            # Finish the chunk, then take the cancellation here: `send` does not
            # await once the client is gone, so without this the export runs on.
            with anyio.CancelScope(shield=True):
                chunk = await fetch_chunk(
                    connection, spec, after_id=chunk.last_id, limit=chunk_rows, email=email
                )
            await anyio.lowlevel.checkpoint_if_cancelled()
        outcome = "completed"
    except Exception:
        outcome = "failed"
        log.exception("export %s failed after %d rows; response aborted", spec.filename, rows)
        raise
    finally:
        await _release(stack, spec)
        log.info(
            "export %s %s by %s: %d rows in %.2fs",
            spec.filename,
            outcome,
            audit,
            rows,
            time.perf_counter() - started,
        )
