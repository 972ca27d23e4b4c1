"""Alembic migrations, shipped inside the package so `reviewpoint db upgrade` works anywhere."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from reviewpoint.db import create_engine

_HERE = Path(__file__).parent


def alembic_config(db_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(slug)s")
    config.attributes["db_url"] = db_url
    return config


def upgrade(db_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(db_url), revision)


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str


def revisions() -> list[Revision]:
    """The migrations this release ships, oldest first (the history is linear)."""
    script = ScriptDirectory.from_config(alembic_config(""))
    shipped = [
        Revision(
            revision=script_revision.revision,
            down_revision=down if isinstance(down := script_revision.down_revision, str) else None,
            message=script_revision.doc,
        )
        for script_revision in script.walk_revisions()
    ]
    return shipped[::-1]


def current_revision(db_url: str) -> str | None:
    """The revision the database was migrated to; None for a database never migrated.

    A SQLite file that does not exist (in a directory that does) is never
    migrated, and asking does not create it.
    """
    url = make_url(db_url)
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path not in (None, "", ":memory:"):
        file = Path(str(path))
        if file.parent.is_dir() and not file.exists():
            return None
    return asyncio.run(_read_current(db_url))


async def _read_current(db_url: str) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()
