"""Database plumbing: model base, engine, the per-request session and snapshot reads."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect, ExceptionContext, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from reviewpoint.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both databases.

    PostgreSQL keeps `timestamptz`; SQLite has no time zones, so values are stored
    as naive UTC text and made aware again on the way out. Naive input is refused
    rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _install_sqlite_transactions(engine: AsyncEngine) -> None:
    """Make SQLite transactions real.

    The sqlite3 driver only opens a transaction before a write, so a multi-query
    read would see several snapshots. We take over BEGIN (SQLAlchemy's documented
    recipe for pysqlite/aiosqlite): request sessions use BEGIN IMMEDIATE, which
    serialises writers up front instead of failing later with SQLITE_BUSY on lock
    upgrade; snapshot reads (`read_only` option) use a plain deferred BEGIN.
    WAL lets those readers run beside a writer.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# SQLite result codes after which a connection may hold a stale view of which
# file it has open and how: read-only (opened while the file could not be
# written, or the file was moved away: SQLITE_READONLY_DBMOVED), cannot open,
# not a database. A new connection sees the file as it is now. Not I/O errors,
# a full disk or corruption: a new connection would not fix those, and closing
# the last one gives up the WAL index that lets reads go on meanwhile.
_SQLITE_REOPEN_CODES = frozenset({8, 14, 26})


def _install_sqlite_reopening(engine: AsyncEngine) -> None:
    """Discard the pool's SQLite connections after an error the file caused.

    Otherwise a server that started while its file was read-only keeps its
    read-only connections, and refuses every write, until it is restarted.
    SQLAlchemy treats the error as a disconnect: the connection is closed, the
    rest of the pool is replaced as it is next used, and the request gets a 503.
    """

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        code = getattr(context.original_exception, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _SQLITE_REOPEN_CODES:
            context.is_disconnect = True


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    # Statement parameters never reach logs or error messages: they hold emails,
    # password hashes and API-key digests.
    kwargs["hide_parameters"] = True
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        _install_sqlite_transactions(engine)
        _install_sqlite_reopening(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


# PostgreSQL limits per use. Request statements are index lookups: anything
# slower is a fault. An export chunk is one COPY of `export_chunk_rows` rows.
REQUEST_STATEMENT_TIMEOUT_MS = 15_000
REQUEST_IDLE_IN_TRANSACTION_MS = 30_000
EXPORT_STATEMENT_TIMEOUT_MS = 300_000
# How long shutdown waits for background bookkeeping writes.
BACKGROUND_GRACE_SECONDS = 5.0


# The server's limits cannot fire when it stops answering without closing the
# connection (a network partition, a frozen host): asyncpg would wait forever
# on a pooled connection's ping and 60 s on a new one. Client-side bounds turn
# that into a 503: connecting gets CONNECT_TIMEOUT_SECONDS, a statement the
# server's statement timeout plus a margin, so the server's own clearer error
# wins whenever it can still answer. Connecting gets 10 s, not less: a busy
# 2-core host (CI running the whole suite) once took over 5 s to start a
# backend, and a refused connection fails at once anyway.
CONNECT_TIMEOUT_SECONDS = 10.0
COMMAND_MARGIN_SECONDS = 2.0


def _postgres_limits(statement_ms: int, idle_ms: int) -> dict[str, Any]:
    settings = {
        "statement_timeout": str(statement_ms),
        "idle_in_transaction_session_timeout": str(idle_ms),
    }
    return {
        "connect_args": {
            "server_settings": settings,
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "command_timeout": statement_ms / 1000 + COMMAND_MARGIN_SECONDS,
        }
    }


def existing_sqlite_file(url: str) -> str:
    """A SQLite URL that opens its file only if it exists (SQLite's `mode=rw`).

    SQLite creates a missing file on connect. A server whose volume is not
    mounted (the empty mount point is there) would make an empty database,
    answer 500 (no such table) and call itself ready; with `mode=rw` it answers
    503 until the file is back, then serves without a restart. Migrations
    still create files: they use `create_engine` directly.
    """
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or path in (None, "", ":memory:"):
        return url
    if parsed.query.get("uri") == "true" or path.startswith("file:"):
        return url
    return parsed.set(
        database=f"file:{quote(path)}", query={**parsed.query, "mode": "rw", "uri": "true"}
    ).render_as_string(hide_password=False)


class Database:
    """A worker's two pools: one for requests, one only for exports.

    Exports get `export_slots x connections_per_export` connections and
    admission control never lets more exports run than that, so however many
    exports run, logins, the admin API and readiness keep the request pool to
    themselves. Nothing holds a connection from one pool while it waits for the
    other: credentials are checked in a short request transaction that ends
    before the export's snapshot opens.

    With `export_db_url` set, the export pool connects there (a replica);
    everything else stays on the primary. Readiness then also checks the replica,
    on one connection of its own: through the export pool a probe would wait
    behind running exports and report a busy server as down.
    """

    def __init__(self, settings: Settings) -> None:
        postgres = not settings.is_sqlite
        export_pool = settings.export_slots * settings.connections_per_export
        request_pool = settings.db_pool_size - export_pool
        self.engine = create_engine(
            existing_sqlite_file(settings.db_url),
            pool_size=request_pool,
            max_overflow=0,
            pool_timeout=settings.db_pool_timeout,
            **(
                _postgres_limits(REQUEST_STATEMENT_TIMEOUT_MS, REQUEST_IDLE_IN_TRANSACTION_MS)
                if postgres
                else {}
            ),
        )
        # A snapshot may idle while its client reads, but never outlive the
        # export's own time limit, even if this process wedges.
        self.export_engine = create_engine(
            existing_sqlite_file(settings.export_db_url or settings.db_url),
            pool_size=export_pool,
            max_overflow=0,
            pool_timeout=settings.db_pool_timeout,
            **(
                _postgres_limits(
                    EXPORT_STATEMENT_TIMEOUT_MS, int(settings.export_max_seconds * 1000) + 60_000
                )
                if postgres
                else {}
            ),
        )
        self.replica_probe = (
            None
            if settings.export_db_url is None
            else create_engine(
                existing_sqlite_file(settings.export_db_url),
                pool_size=1,
                max_overflow=0,
                pool_timeout=settings.db_pool_timeout,
                **(
                    _postgres_limits(REQUEST_STATEMENT_TIMEOUT_MS, REQUEST_IDLE_IN_TRANSACTION_MS)
                    if postgres
                    else {}
                ),
            )
        )
        self._background: dict[str, asyncio.Task[None]] = {}
        self._writes = async_sessionmaker(self.engine, expire_on_commit=False)
        # On SQLite `read_only` makes the transaction a deferred BEGIN, which
        # takes no write lock (see _install_sqlite_transactions).
        self._reads = async_sessionmaker(
            self.engine.execution_options(read_only=True), expire_on_commit=False
        )

    def spawn_once(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` beside the request unless work of that name is already running.

        For writes no request should wait for (bookkeeping such as `last_used_at`);
        `dispose` lets them finish.
        """
        if name in self._background:
            return
        task = asyncio.get_running_loop().create_task(work())
        self._background[name] = task
        task.add_done_callback(lambda _: self._background.pop(name, None))

    async def ping(self, *, replica: bool = False) -> None:
        """One round trip to the primary on a request connection (with `replica`,
        to the replica on its probe connection), outside any transaction.

        Readiness probes come every few seconds from every balancer: through the
        driver directly they cost one query instead of BEGIN, SELECT, ROLLBACK.
        """
        engine = self.replica_probe if replica else self.engine
        if engine is None:
            raise ValueError("no replica configured (REVIEWPOINT_EXPORT_DB_URL)")
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            if isinstance(driver, asyncpg.Connection):
                await driver.fetchval("SELECT 1")
            elif driver is not None:  # aiosqlite
                await driver.execute_fetchall("SELECT 1")

    def session(self, *, read_only: bool = False) -> AsyncSession:
        return (self._reads if read_only else self._writes)()

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        """A short transaction of its own, committed (or rolled back) on exit."""
        async with self.session(read_only=read_only) as session, session.begin():
            yield session

    async def dispose(self) -> None:
        if self._background:
            await asyncio.wait(self._background.values(), timeout=BACKGROUND_GRACE_SECONDS)
        await self.engine.dispose()
        await self.export_engine.dispose()
        if self.replica_probe is not None:
            await self.replica_probe.dispose()


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent.

    GET and HEAD only read, so on SQLite they never queue for the write lock.
    The connection is taken at the first statement, not before.
    """
    read_only = request.method in ("GET", "HEAD")
    async with get_database(request).transaction(read_only=read_only) as session:
        yield session


# scope="function": commit before the response goes out, so a client that gets
# 201 can read its write back at once.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
DatabaseDep = Annotated[Database, Depends(get_database)]


@asynccontextmanager
async def snapshot(
    engine: AsyncEngine, *, share: str | None = None
) -> AsyncIterator[AsyncConnection]:
    """A connection inside one read-only transaction: every query sees the same data.

    PostgreSQL: REPEATABLE READ + READ ONLY (asyncpg only accepts its own
    `readonly` flag with SERIALIZABLE, so the mode is set in SQL); `share` is a
    snapshot id from `pg_export_snapshot()` to see exactly what that
    transaction sees. SQLite: one deferred read transaction, a stable snapshot
    under WAL.

    The transaction always ends in a rollback, however the caller leaves: a read
    has nothing to commit, and COMMIT would raise on a connection that broke
    mid-query (a cancelled query when the client hangs up, a killed backend).
    Closing the connection rolls back, discards a broken one, and is shielded from
    cancellation by SQLAlchemy.
    """
    if engine.dialect.name == "postgresql":
        options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"}
    else:
        options = {"read_only": True}
    async with engine.connect() as connection:
        connection = await connection.execution_options(**options)
        await connection.begin()
        if engine.dialect.name == "postgresql":
            if share is not None:
                # The id comes from the server; the pattern keeps it a literal.
                if not _SNAPSHOT_ID.fullmatch(share):
                    raise ValueError(f"not a snapshot id: {share!r}")
                await connection.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{share}'")
            await connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        yield connection


_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]+")


@asynccontextmanager
async def shared_snapshot(engine: AsyncEngine, count: int) -> AsyncIterator[list[AsyncConnection]]:
    """`count` snapshot connections that all see the same data (PostgreSQL).

    SQLite gets one connection whatever `count` says: a second reader thread did
    not make exports faster (measured on 1,000,000 rows: 1.64 s for two threads,
    1.63 s for one; most likely SQLite's process-wide allocator mutex).
    """
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(snapshot(engine))
        connections = [first]
        if engine.dialect.name == "postgresql" and count > 1:
            shared = (await first.exec_driver_sql("SELECT pg_export_snapshot()")).scalar_one()
            for _ in range(count - 1):
                connections.append(await stack.enter_async_context(snapshot(engine, share=shared)))
        yield connections


@asynccontextmanager
async def standalone_session(url: str) -> AsyncIterator[AsyncSession]:
    """A session outside any request (CLI): one transaction, its own engine."""
    engine = create_engine(url)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            yield session
    finally:
        await engine.dispose()
