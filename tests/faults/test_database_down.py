"""A database that cannot be reached before a request: every route that needs it
answers 503 with `Retry-After` at once, readiness fails, and both recover by
themselves once it is back, with no restart.

PostgreSQL goes away under a running server: it connects through a relay
(tests/faults/proxy.py) that is closed, so pooled connections die and new ones
are refused, then opened again on the same port. SQLite has no server to lose:
its outage is the volume holding the file not being there (not mounted yet, or
an operator's mistake) when the server starts, which it must survive and leave
on its own once the file is in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from reviewpoint.db import (
    COMMAND_MARGIN_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    REQUEST_STATEMENT_TIMEOUT_MS,
)
from reviewpoint.health import PROBE_SECONDS
from tests.conftest import BACKENDS
from tests.faults.calls import (
    READY,
    USERS,
    Live,
    assert_retry_later,
    assert_served,
    live_server_on,
)
from tests.faults.proxy import TcpProxy

# A refusal needs no pool timeout, no connect timeout: well under a second
# here; the bound leaves room for a loaded machine.
PROMPT_SECONDS = 3.0


def _only(backend: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        "db_url", [name for name in BACKENDS if name == backend], indirect=True
    )


def _assert_refused_promptly(down: dict[str, httpx.Response]) -> None:
    for name in ("export", "admin", "login"):
        assert_retry_later(down[name], "Database unavailable", retry_after=2)
        assert down[name].elapsed.total_seconds() < PROMPT_SECONDS, name
    assert_retry_later(down["ready"], "Database unreachable", retry_after=2)


@contextmanager
def _through_relay(db_url: str) -> Iterator[tuple[TcpProxy, Live]]:
    """A server reaching `db_url` through a relay, having served every route once,
    so its pools hold connections that a fault then breaks."""
    with (
        TcpProxy.to_database(db_url) as proxy,
        live_server_on(proxy.url_through(db_url), made_in=db_url) as live,
    ):
        assert_served(live.each_route())
        yield proxy, live


@_only("postgresql")
def test_postgresql_going_away_is_503_with_retry_after_and_its_return_needs_no_restart(
    db_url: str,
) -> None:
    with _through_relay(db_url) as (proxy, live):
        proxy.down()
        down = live.each_route()
        again = live.each_route()
        proxy.up()
        back = live.each_route()
    _assert_refused_promptly(down)
    _assert_refused_promptly(again)
    assert_served(back)


@_only("postgresql")
def test_postgresql_that_stops_answering_is_503_within_bounds_and_recovers_without_restart(
    db_url: str,
) -> None:
    """A partition or a frozen host: connections stay open, nothing comes back,
    and the server's own timeouts cannot fire. Readiness must say so before a
    balancer's probe gives up; a request must end instead of holding its
    connection for ever."""
    with (
        _through_relay(db_url) as (proxy, live),
        httpx.Client(base_url=live.server.url, timeout=60) as other_client,
        ThreadPoolExecutor(1) as beside,
    ):
        proxy.freeze()
        admin = beside.submit(other_client.get, USERS, headers=live.callers.admin)
        ready = live.client.get(READY)
        stuck = admin.result()
        proxy.up()
        back = live.each_route()
    assert_retry_later(ready, "Database unreachable", retry_after=2)
    # SQLAlchemy gives the abandoned connection 2 s to close gracefully.
    assert ready.elapsed.total_seconds() < PROBE_SECONDS + 2 + 1.5
    assert_retry_later(stuck, "Database unavailable", retry_after=2)
    longest = REQUEST_STATEMENT_TIMEOUT_MS / 1000 + COMMAND_MARGIN_SECONDS + CONNECT_TIMEOUT_SECONDS
    assert stuck.elapsed.total_seconds() < longest + 2
    assert_served(back)


@_only("sqlite")
@pytest.mark.parametrize(
    "mount_point_exists", [False, True], ids=["no-mount-point", "empty-mount-point"]
)
def test_a_sqlite_file_missing_at_start_is_503_with_retry_after_and_its_arrival_needs_no_restart(
    db_url: str, tmp_path: Path, mount_point_exists: bool
) -> None:
    """The volume holding the file is not mounted: its mount point is missing, or
    there and empty. The server must not make an empty database there."""
    database = make_url(db_url).database
    assert database is not None
    stored = Path(database)
    volume = tmp_path / "volume"
    if mount_point_exists:
        volume.mkdir()
    with live_server_on(f"sqlite+aiosqlite:///{volume / stored.name}", made_in=db_url) as live:
        down = live.each_route()
        assert not volume.exists() or not any(volume.iterdir()), "a file was made"
        volume.mkdir(exist_ok=True)
        for part in stored.parent.glob(f"{stored.name}*"):  # with its -wal and -shm, if any
            part.rename(volume / part.name)
        back = live.each_route()
    _assert_refused_promptly(down)
    assert_served(back)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["volume"]
