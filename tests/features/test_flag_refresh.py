"""What one worker serves: flags from memory, refreshed from the database in the background.

A read never queries; a change made elsewhere arrives within the refresh
interval; when the overrides cannot be read, the last values stay in force.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from reviewpoint.config import Settings, load_settings
from reviewpoint.main import create_app
from tests.conftest import BACKENDS, eventually, pg_execute, statements_sent
from tests.data import admin_headers
from tests.features.overrides import (
    ALIVE,
    FEATURES_API,
    SIMPLE,
    hide_overrides_table,
    override,
    overrides_table_hidden,
    show_overrides_table,
)

NOT_REFRESHED = "feature flags not refreshed"
REFRESHED_AGAIN = "feature flags refreshed again"


@contextmanager
def _client(settings: Settings, refresh_seconds: float, **changes: object) -> Iterator[TestClient]:
    tuned = settings.model_copy(update={"feature_refresh_seconds": refresh_seconds, **changes})
    with TestClient(create_app(tuned)) as client:
        yield client


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def flag_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the flag refresher (the app's loggers do not propagate to pytest's)."""
    logger = logging.getLogger("reviewpoint.features")
    handler = _Records()
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def _messages(records: list[logging.LogRecord], start: str) -> list[str]:
    return [r.getMessage() for r in records if r.getMessage().startswith(start)]


def _serves(client: TestClient, path: str, status: int) -> Callable[[], bool]:
    return lambda: client.get(path).status_code == status


# A change made elsewhere arrives without a restart


def test_a_change_made_by_another_process_is_served_within_the_refresh_interval(
    settings: Settings, db_url: str
) -> None:
    with _client(settings, refresh_seconds=0.2) as client:
        assert client.get(ALIVE).status_code == 200
        override(db_url, "users:export_alive", False)
        changed = time.monotonic()
        assert eventually(_serves(client, ALIVE, 403), seconds=5)
        assert time.monotonic() - changed < 5
        assert client.get(SIMPLE).status_code == 200
        override(db_url, "users:export_alive", None)
        assert eventually(_serves(client, ALIVE, 200), seconds=5)


def test_overrides_already_in_the_database_are_served_from_the_first_request(
    settings: Settings, db_url: str
) -> None:
    override(db_url, "users:export_simple", False)
    with _client(settings, refresh_seconds=60) as client:
        assert client.get(SIMPLE).status_code == 403
        assert client.get(ALIVE).status_code == 200


# Reading a flag is not a database round trip


def test_gated_requests_send_no_query_whether_the_flag_is_on_or_off(
    settings: Settings, db_url: str
) -> None:
    override(db_url, "users:export_simple", False)
    # A long interval: no background refresh falls inside the counted block.
    with _client(settings, refresh_seconds=60) as client:
        headers = admin_headers(client, db_url)
        with statements_sent(client.app) as sent:
            alive = {client.get(ALIVE).status_code for _ in range(20)}
            simple = {client.get(SIMPLE).status_code for _ in range(20)}
        assert (alive, simple) == ({200}, {403})
        assert sent == []
        # The counter does see the queries an admin's list makes.
        with statements_sent(client.app) as sent:
            assert client.get(FEATURES_API, headers=headers).status_code == 200
        assert sent


# When the overrides cannot be read


def test_unreadable_overrides_keep_the_last_values_and_warn_once_per_outage(
    settings: Settings, db_url: str, flag_log: list[logging.LogRecord]
) -> None:
    override(db_url, "users:export_alive", False)
    with _client(settings, refresh_seconds=0.1) as client:
        assert client.get(ALIVE).status_code == 403
        with overrides_table_hidden(db_url):
            assert eventually(lambda: bool(_messages(flag_log, NOT_REFRESHED)), seconds=5)
            time.sleep(0.5)  # several more failed refreshes
            during = client.get(ALIVE)
        assert during.status_code == 403
        assert len(_messages(flag_log, NOT_REFRESHED)) == 1
        assert eventually(lambda: bool(_messages(flag_log, REFRESHED_AGAIN)), seconds=5)
        override(db_url, "users:export_alive", None)
        assert eventually(_serves(client, ALIVE, 200), seconds=5)


def test_start_up_without_readable_overrides_serves_the_defaults_then_picks_them_up(
    settings: Settings, db_url: str
) -> None:
    override(db_url, "users:export_alive", False)
    hide_overrides_table(db_url)
    with _client(settings, refresh_seconds=0.2) as client:
        at_start = client.get(ALIVE).status_code
        show_overrides_table(db_url)
        assert eventually(_serves(client, ALIVE, 403), seconds=5)
    assert at_start == 200


def _unreachable_sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'reviewpoint.db'}"


def _unreachable_server(tmp_path: Path) -> str:
    # Port 1 is privileged and unused: the connection is refused at once.
    return "postgresql+asyncpg://postgres@127.0.0.1:1/reviewpoint"


# ids free of "postgresql": conftest counts those as tests run on a real PostgreSQL.
@pytest.mark.parametrize(
    "unreachable",
    [
        pytest.param(_unreachable_sqlite, id="sqlite-in-missing-directory"),
        pytest.param(_unreachable_server, id="pg-server-refusing-connections"),
    ],
)
def test_an_unreachable_database_at_start_up_serves_the_environment_defaults(
    tmp_path: Path, unreachable: Callable[[Path], str]
) -> None:
    settings = load_settings(
        _env_file=None,
        env="test",
        db_url=unreachable(tmp_path),
        log_level="warning",
        feature_users_export_simple=False,
    )
    started = time.monotonic()
    with TestClient(create_app(settings)) as client:
        alive = client.get(ALIVE)
        simple = client.get(SIMPLE)
    assert time.monotonic() - started < 5
    assert alive.status_code == 200
    assert simple.status_code == 403
    assert simple.json() == {"detail": "Feature 'users:export_simple' is disabled"}


# Only a database server can go away under a running app and come back.
@pytest.mark.parametrize(
    "db_url", [backend for backend in BACKENDS if backend == "postgresql"], indirect=True
)
def test_flags_are_served_while_the_database_is_gone_and_refresh_when_it_is_back(
    settings: Settings, db_url: str, flag_log: list[logging.LogRecord]
) -> None:
    database = make_url(db_url).database
    hidden = f"{database}_hidden"
    override(db_url, "users:export_alive", False)
    with _client(settings, refresh_seconds=0.1) as client:
        pg_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        pg_execute(f'ALTER DATABASE "{database}" RENAME TO "{hidden}"')
        try:
            assert eventually(lambda: bool(_messages(flag_log, NOT_REFRESHED)), seconds=5)
            gone = (client.get(ALIVE), client.get(SIMPLE))
        finally:
            pg_execute(f'ALTER DATABASE "{hidden}" RENAME TO "{database}"')
        assert [response.status_code for response in gone] == [403, 200]
        override(db_url, "users:export_alive", None)
        assert eventually(_serves(client, ALIVE, 200), seconds=5)
