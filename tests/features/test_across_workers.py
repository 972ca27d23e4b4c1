"""A flag switched off through the API or the CLI answers 403 on every worker within 5 s.

Two `reviewpoint serve` processes on one database, as two workers: neither is
restarted, and only the database connects them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import served_process
from tests.data import BULK_PASSWORD, insert_user, login
from tests.features.overrides import ALIVE, FEATURES_API, SIMPLE
from tests.test_cli import assert_ok, cli

# What issue #8 promises; the default refresh interval (2 s) keeps well inside it.
PROMISE_SECONDS = 5.0


@contextmanager
def _two_workers(db_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    # One signing key, so a token from one worker is good on the other.
    key = secrets.token_urlsafe(32)
    with (
        served_process(db_url, tmp_path / "first.log", jwt_secret_key=key) as first,
        served_process(db_url, tmp_path / "second.log", jwt_secret_key=key) as second,
    ):
        yield first, second


def _serves_within_promise(url: str, path: str, status: int, *, since: float) -> bool:
    while httpx.get(f"{url}{path}").status_code != status:
        if time.monotonic() - since > PROMISE_SECONDS:
            return False
        time.sleep(0.05)
    return True


def test_a_flag_switched_off_through_the_api_is_403_on_another_worker_within_5_seconds(
    db_url: str, tmp_path: Path
) -> None:
    insert_user(db_url, "admin@example.com", is_admin=True)
    with _two_workers(db_url, tmp_path) as (first, second), httpx.Client(base_url=first) as api:
        headers = login(api, "admin@example.com", BULK_PASSWORD)
        assert httpx.get(f"{second}{ALIVE}").status_code == 200
        path = f"{FEATURES_API}/users:export_alive"

        assert api.put(path, json={"enabled": False}, headers=headers).status_code == 200
        changed = time.monotonic()
        assert api.get(ALIVE).status_code == 403  # the worker that made it: at once
        assert _serves_within_promise(second, ALIVE, 403, since=changed)
        assert httpx.get(f"{second}{SIMPLE}").status_code == 200

        assert api.delete(path, headers=headers).status_code == 200
        reset = time.monotonic()
        assert _serves_within_promise(second, ALIVE, 200, since=reset)


def test_a_flag_switched_off_through_the_cli_is_403_on_every_worker_within_5_seconds(
    db_url: str, tmp_path: Path
) -> None:
    with _two_workers(db_url, tmp_path) as workers:
        assert [httpx.get(f"{url}{SIMPLE}").status_code for url in workers] == [200, 200]

        assert_ok(cli(tmp_path, db_url, "features", "disable", "users:export_simple"))
        changed = time.monotonic()
        for url in workers:
            assert _serves_within_promise(url, SIMPLE, 403, since=changed)
            assert httpx.get(f"{url}{ALIVE}").status_code == 200

        assert_ok(cli(tmp_path, db_url, "features", "reset", "users:export_simple"))
        reset = time.monotonic()
        for url in workers:
            assert _serves_within_promise(url, SIMPLE, 200, since=reset)
