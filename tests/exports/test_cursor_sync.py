"""Incremental sync under concurrent writers, against a real server: nothing is missed.

A replica built from one full export and then only cursor exports, each with
the previous one's cursor, must end equal to the table, while writers insert,
update, delete and undelete users in transactions that stay open for a while
(so exports keep starting while writes are in flight).
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import threading
import time
from datetime import datetime

import httpx
import pytest
from sqlalchemy import false, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reviewpoint import security
from reviewpoint.config import Settings
from reviewpoint.db import create_engine, utcnow
from reviewpoint.exports import cursor
from reviewpoint.exports.columns import FULL
from reviewpoint.exports.formats.csv import format_cell
from reviewpoint.users.models import User
from tests.conftest import BACKENDS, LiveServer
from tests.data import create_api_key, insert_users

EXPORT_FULL = "/api/v1/users/export-full"
_HASH = security.hash_password("writer-password-1")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Small chunks (each export spans many queries, on several connections on
    PostgreSQL) and no admission limits in the way of back-to-back exports."""
    return settings.model_copy(
        update={
            "export_chunk_rows": 25,
            "export_rate_limit": "10000/minute",
            "export_max_concurrent_per_credential": 10,
        }
    )


@pytest.fixture
def full_key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}


# --- the writers -------------------------------------------------------------------


class Writers:
    """Writer tasks on an event loop of their own thread, each with random transactions.

    Every transaction sleeps a little before COMMIT, so that exports start
    while it is in flight.
    """

    def __init__(self, db_url: str, ids: list[int], *, tasks: int, seed: int) -> None:
        self._db_url = db_url
        self._ids = ids
        self._tasks = tasks
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._serial = 0
        self.committed = 0
        self.errors: list[BaseException] = []

    def __enter__(self) -> Writers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "writers did not stop"

    async def _main(self) -> None:
        engine = create_engine(self._db_url, pool_size=self._tasks)
        try:
            await asyncio.gather(*(self._run(engine) for _ in range(self._tasks)))
        finally:
            await engine.dispose()

    async def _run(self, engine: AsyncEngine) -> None:
        while not self._stop.is_set():
            try:
                async with engine.begin() as connection:
                    writes = self._random.choice((1, 1, 1, 2, 3))
                    for _ in range(writes):
                        await self._one_write(connection, alone=writes == 1)
                    await asyncio.sleep(self._random.uniform(0, 0.02))
                self.committed += 1
            except Exception as error:  # recorded: the test fails on any
                self.errors.append(error)
                return

    def _email(self) -> str:
        self._serial += 1
        return f"writer{self._serial}@example.com"

    async def _one_write(self, connection: AsyncConnection, *, alone: bool) -> None:
        pick = self._random.random
        now = utcnow()
        if pick() < 0.25 or not self._ids:
            result = await connection.execute(
                insert(User)
                .values(
                    email=self._email(),
                    name=f"Writer {self._serial}",
                    hashed_password=_HASH,
                    created_at=now,
                    updated_at=now,
                )
                .returning(User.id)
            )
            self._ids.append(result.scalar_one())
            return
        some = self._random.sample(self._ids, k=min(len(self._ids), self._random.choice((1, 3))))
        where = User.id.in_(some)
        # A login is a transaction of its own, as in the app: it locks a user row
        # without the counter, so a later write in the same transaction could
        # deadlock with one that holds the counter.
        kinds = ["name", "email", "active", "admin", "delete", "undo"] + ["login"] * alone
        kind = self._random.choice(kinds)
        values: dict[str, object] = {
            "name": {"name": f"Renamed {self._random.randrange(10**6)}", "updated_at": now},
            "email": {"email": self._email(), "updated_at": now},
            "active": {"is_active": User.is_active == false(), "updated_at": now},
            "admin": {"is_admin": User.is_admin == false(), "updated_at": now},
            "delete": {"is_deleted": True, "is_active": False, "updated_at": now},
            "undo": {"is_deleted": False, "updated_at": now},
            # A login: not a change, but a write that must not disturb anything.
            "login": {"last_login_at": now, "updated_at": User.updated_at},
        }[kind]
        if kind == "email":
            where = User.id == some[0]
        await connection.execute(update(User).where(where).values(**values))


# --- the replica -------------------------------------------------------------------


def _csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def _export(client: httpx.Client, key: dict[str, str], since: str | None) -> tuple[bytes, str]:
    params = {} if since is None else {"cursor": since}
    response = client.get(EXPORT_FULL, headers=key, params=params)
    assert response.status_code == 200, response.text
    return response.content, response.headers[cursor.HEADER]


def _apply(replica: dict[str, list[str]], body: bytes) -> int:
    """Upsert by id, remove deleted ones; how many rows the sync held."""
    header, *rows = _csv(body)
    assert header == [*FULL.header, "is_deleted"]
    for row in rows:
        if row[-1] == "true":
            replica.pop(row[0], None)
        else:
            replica[row[0]] = row[:-1]
    return len(rows)


def _table(db_url: str) -> dict[str, list[str]]:
    """The live users as the full export writes them, read straight from the table."""

    async def run() -> dict[str, list[str]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                columns = [getattr(User, name) for name in FULL.header]
                result = await connection.execute(
                    select(*columns).where(User.is_deleted.is_(False)).order_by(User.id)
                )
                return {
                    str(row.id): [
                        format_cell(kind, getattr(row, name)) for name, kind in FULL.columns
                    ]
                    for row in result
                }
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _ids(db_url: str) -> list[int]:
    return [int(user_id) for user_id in _table(db_url)]


def test_replaying_syncs_under_concurrent_writers_yields_the_final_table(
    live_server: LiveServer, db_url: str, full_key: dict[str, str]
) -> None:
    insert_users(db_url, [(f"first{n}@example.com", f"First {n}") for n in range(300)])
    ids = _ids(db_url)
    syncs = changed = 0
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        with Writers(db_url, ids, tasks=3, seed=9) as writers:
            time.sleep(0.2)  # writes in flight before the first export too
            body, since = _export(client, full_key, None)
            _, *rows = _csv(body)
            replica = {row[0]: row for row in rows}
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                body, since = _export(client, full_key, since)
                changed += _apply(replica, body)
                syncs += 1
        assert not writers.errors, writers.errors
        body, since = _export(client, full_key, since)
        changed += _apply(replica, body)

    table = _table(db_url)
    assert replica == table
    # Not vacuous: writers committed throughout, and syncs carried their changes.
    assert writers.committed > 50
    assert syncs > 5
    assert changed > writers.committed / 4


# --- writes in flight when an export starts ----------------------------------------


def test_a_write_in_flight_when_an_export_starts_is_in_the_next_sync(
    live_server: LiveServer, db_url: str, full_key: dict[str, str]
) -> None:
    """The case `updated_at >= export start` misses: the write took its timestamp
    before the export started and committed after its snapshot."""
    insert_users(db_url, [(f"u{n}@example.com", f"U {n}") for n in range(50)])
    target = _ids(db_url)[10]

    async def scenario() -> tuple[bytes, bytes, datetime, datetime]:
        engine = create_engine(db_url)
        try:
            async with (
                engine.connect() as writer,
                httpx.AsyncClient(base_url=live_server.url, timeout=30) as http,
            ):
                await writer.begin()
                stamped = utcnow()
                await writer.execute(
                    update(User).where(User.id == target).values(name="Late", updated_at=stamped)
                )
                export_started = utcnow()
                first = await http.get(EXPORT_FULL, headers=full_key)
                assert first.status_code == 200
                await writer.commit()
                second = await http.get(
                    EXPORT_FULL,
                    headers=full_key,
                    params={"cursor": first.headers[cursor.HEADER]},
                )
                assert second.status_code == 200
                return first.content, second.content, stamped, export_started
        finally:
            await engine.dispose()

    first, second, stamped, export_started = asyncio.run(scenario())
    before = {row[0]: row for row in _csv(first)[1:]}
    assert before[str(target)][2] == "U 10", "the export saw an uncommitted write"
    assert stamped < export_started  # so `updated_at >= export start` would skip it
    synced = {row[0]: row for row in _csv(second)[1:]}
    assert list(synced) == [str(target)]
    assert synced[str(target)][2] == "Late"


# --- PostgreSQL: waiting for the counter holds no user row -------------------------


@pytest.mark.parametrize(
    "db_url", [backend for backend in BACKENDS if backend == "postgresql"], indirect=True
)
def test_writers_queue_for_the_counter_before_locking_a_user_row(db_url: str) -> None:
    """A transaction holding the counter that then updates a user another writer
    is waiting to update must not deadlock: the waiter holds no row lock yet."""
    insert_users(db_url, [("a@example.com", "A"), ("b@example.com", "B")])
    first_id, second_id = _ids(db_url)

    async def scenario() -> str:
        engine = create_engine(db_url, pool_size=2)
        try:
            async with engine.connect() as holder, engine.connect() as waiter:
                await holder.begin()
                await holder.execute(
                    update(User).where(User.id == first_id).values(name="A2", updated_at=utcnow())
                )
                await waiter.begin()
                waiting = asyncio.create_task(
                    waiter.execute(
                        update(User)
                        .where(User.id == second_id)
                        .values(name="B2", updated_at=utcnow())
                    )
                )
                await asyncio.sleep(0.3)
                assert not waiting.done(), "the second writer did not wait for the counter"
                # Would deadlock if the waiter had locked its row before the counter.
                await holder.execute(text("SET LOCAL lock_timeout = '3s'"))
                await holder.execute(
                    update(User).where(User.id == second_id).values(name="B1", updated_at=utcnow())
                )
                await holder.commit()
                await waiting
                await waiter.commit()
                async with engine.connect() as reader:
                    name = await reader.scalar(select(User.name).where(User.id == second_id))
                    assert name is not None
                    return name
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == "B2"
