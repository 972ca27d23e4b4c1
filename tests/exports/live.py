"""What the real-server export tests share: small socket buffers, the app's database sessions."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.engine import make_url

# Kernel socket buffers on loopback hold megabytes, enough for the server to
# write a whole test export before the client reads a byte; this keeps it to
# about 200 kB ahead of a client that reads slowly or not at all.
SMALL_BUFFER = 32 * 1024


def _pg_fetch(db_url: str, sql: str) -> list[asyncpg.Record]:
    """Rows of one query, on a plain asyncpg connection to the test's database."""
    dsn = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(dsn)
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()

    return asyncio.run(run())


def app_backends(db_url: str) -> list[asyncpg.Record]:
    """The app's PostgreSQL connections that are inside a transaction or running a query."""
    return _pg_fetch(
        db_url,
        "SELECT pid, state, query FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND (state = 'active' OR state LIKE 'idle in transaction%')",
    )
