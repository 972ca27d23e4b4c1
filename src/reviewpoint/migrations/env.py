"""Alembic environment: async engines, batch mode on SQLite (it cannot ALTER most things)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from reviewpoint.api_keys import models as _api_keys  # noqa: F401  (register tables)
from reviewpoint.audit import models as _audit  # noqa: F401  (register tables)
from reviewpoint.console import models as _console  # noqa: F401  (register tables)
from reviewpoint.db import Base, create_engine
from reviewpoint.features import models as _features  # noqa: F401  (register tables)
from reviewpoint.users import models as _users  # noqa: F401  (register tables)

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


url: str = config.attributes.get("db_url") or config.get_main_option("sqlalchemy.url") or ""
if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online(url))
