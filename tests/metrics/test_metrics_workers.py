"""`/metrics` of `reviewpoint serve --workers 2`: one count, whichever worker answers.

The servers are real processes (`served_process`) with `TMPDIR` set to the
test's directory, so the metrics directory `serve` makes for its workers can be
watched. Rate limits live in the machine's Redis under a prefix of the test's
own, so that a budget is one budget across both workers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import eventually, served_process
from tests.data import create_api_key, insert_users
from tests.metrics.exposition import Series, parse, value

REDIS_URL = os.environ.get("REVIEWPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
EXPORT_FULL = "/api/v1/users/export-full"
HEALTH = "/api/v1/health"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _scrape(url: str) -> dict[Series, float]:
    # A new connection each time: either worker may answer.
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def _delta(after: dict[Series, float], before: dict[Series, float]) -> dict[Series, float]:
    return {series: after[series] - before.get(series, 0.0) for series in after}


def _worker_pids(directory: Path) -> set[int]:
    return {
        int(match[1])
        for path in directory.iterdir()
        if (match := re.search(r"_(\d+)\.db$", path.name))
    }


def _metrics_directory(tmp_path: Path) -> Path:
    (directory,) = tmp_path.glob("reviewpoint-metrics-*")
    return directory


def _requests(samples: dict[Series, float], route: str, status: int) -> float:
    labels = {"route": route, "method": "GET", "status": str(status)}
    return value(samples, "reviewpoint_http_requests_total", **labels)


def _exports(samples: dict[Series, float], outcome: str) -> float:
    labels = {"endpoint": "export-full", "format": "csv", "outcome": outcome}
    return value(samples, "reviewpoint_exports_total", **labels)


def test_metrics_count_a_known_sequence_exactly_across_two_workers(
    db_url: str, tmp_path: Path
) -> None:
    users, health_checks, exports, denied = 25, 9, 4, 3
    insert_users(db_url, [(f"user{i}@example.com", f"User {i}") for i in range(users)])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    unknown_key = {"X-API-Key": "rvp_0123456789ab_" + "A" * 43}
    with served_process(
        db_url,
        tmp_path / "server.log",
        workers=2,
        environment={"TMPDIR": str(tmp_path)},
        rate_limit_storage=REDIS_URL,
        rate_limit_prefix=f"rvp-test-{uuid.uuid4().hex}",
        export_rate_limit=f"{exports}/minute",
    ) as url:
        directory = _metrics_directory(tmp_path)
        # Both workers have built their app (and their metrics) before counting starts.
        assert eventually(lambda: len(_worker_pids(directory)) == 2, seconds=20)
        before = _scrape(url)

        for _ in range(health_checks):
            assert httpx.get(url + HEALTH, timeout=10).status_code == 200
        sizes = []
        for _ in range(exports):
            response = httpx.get(url + EXPORT_FULL, headers=key, timeout=10)
            assert response.status_code == 200
            sizes.append(len(response.content))
        for headers in [{}, unknown_key, {}][:denied]:
            assert httpx.get(url + EXPORT_FULL, headers=headers, timeout=10).status_code == 401
        assert httpx.get(url + EXPORT_FULL, headers=key, timeout=10).status_code == 429
        assert httpx.get(url + "/no/such/path", timeout=10).status_code == 404

        # An export is counted once its body has closed, just after the client has it all.
        assert eventually(lambda: _exports(_delta(_scrape(url), before), "completed") == exports)
        scrapes = [_scrape(url) for _ in range(8)]
    assert all(scrape == scrapes[0] for scrape in scrapes), "two workers answered differently"
    counted = _delta(scrapes[0], before)

    assert _requests(counted, HEALTH, 200) == health_checks
    assert _requests(counted, EXPORT_FULL, 200) == exports
    assert _requests(counted, EXPORT_FULL, 401) == denied
    assert _requests(counted, EXPORT_FULL, 429) == 1
    assert _requests(counted, "unmatched", 404) == 1
    every_request = sum(
        change for (name, _), change in counted.items() if name == "reviewpoint_http_requests_total"
    )
    assert every_request == health_checks + exports + denied + 1 + 1
    timed = {"route": HEALTH, "method": "GET"}
    assert (
        value(counted, "reviewpoint_http_request_duration_seconds_count", **timed) == health_checks
    )

    assert _exports(counted, "completed") == exports
    assert _exports(counted, "denied") == denied
    assert _exports(counted, "limited") == 1
    assert value(counted, "reviewpoint_rejections_total", kind="rate", action="export") == 1
    assert value(counted, "reviewpoint_rejections_total", kind="concurrency", action="export") == 0
    labels = {"endpoint": "export-full", "format": "csv"}
    assert value(counted, "reviewpoint_export_rows_total", **labels) == exports * users
    assert value(counted, "reviewpoint_export_bytes_total", **labels) == sum(sizes)
    completed = {**labels, "outcome": "completed"}
    assert value(counted, "reviewpoint_export_duration_seconds_count", **completed) == exports
    assert value(scrapes[0], "reviewpoint_exports_in_progress") == 0
    # The directory was this run's alone: gone with the server.
    assert not directory.exists()


@SQLITE_ONLY
def test_a_killed_worker_leaves_its_counts_but_not_its_exports_in_progress(
    db_url: str, tmp_path: Path
) -> None:
    # A large export, so that a client reading nothing holds it open.
    name = "A name long enough to make the export larger than socket buffers"
    insert_users(db_url, [(f"u{i}@example.com", f"{name} {i}") for i in range(60_000)])
    key = create_api_key(db_url, ["users:export_full"])[1]
    with served_process(
        db_url,
        tmp_path / "server.log",
        workers=2,
        environment={"TMPDIR": str(tmp_path)},
        export_chunk_rows="100",
    ) as url:
        directory = _metrics_directory(tmp_path)
        assert eventually(lambda: len(_worker_pids(directory)) == 2, seconds=20)
        for _ in range(5):
            assert httpx.get(url + HEALTH, timeout=10).status_code == 200
        health_before = _requests(_scrape(url), HEALTH, 200)

        with socket.socket() as held:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            held.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            held.settimeout(20)
            held.sendall(
                f"GET {EXPORT_FULL} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n".encode()
            )
            assert held.recv(12) == b"HTTP/1.1 200"
            assert value(_scrape(url), "reviewpoint_exports_in_progress") == 1
            (streaming,) = [
                pid
                for pid in _worker_pids(directory)
                if _in_progress_file(directory, pid).exists()
                and _in_progress(_in_progress_file(directory, pid)) == 1
            ]
            os.kill(streaming, signal.SIGKILL)
            # uvicorn starts a replacement; the dead worker's export is no longer running.
            assert eventually(
                lambda: value(_scrape(url), "reviewpoint_exports_in_progress") == 0, seconds=20
            )
        samples = _scrape(url)
    # What the dead worker counted still counts.
    assert _requests(samples, HEALTH, 200) == health_before
    assert _requests(samples, EXPORT_FULL, 200) == 1


def _in_progress_file(directory: Path, pid: int) -> Path:
    return directory / f"gauge_livesum_{pid}.db"


def _in_progress(path: Path) -> float:
    """One worker's share of exports in progress, read from its own file."""
    (family,) = MultiProcessCollector.merge([str(path)])
    return sum(sample.value for sample in family.samples)


@SQLITE_ONLY
def test_metrics_switched_off_serve_404_and_write_nothing_in_any_worker(
    db_url: str, tmp_path: Path
) -> None:
    shared = tmp_path / "operator-metrics"
    shared.mkdir()
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    with served_process(
        db_url,
        tmp_path / "server.log",
        workers=2,
        environment={"TMPDIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(shared)},
        metrics="false",
    ) as url:
        for _ in range(4):
            assert httpx.get(url + EXPORT_FULL, headers=key, timeout=10).status_code == 200
            response = httpx.get(f"{url}/metrics", timeout=10)
            assert response.status_code == 404
            assert response.json() == {"detail": "Not Found"}
    assert list(shared.iterdir()) == []
    assert list(tmp_path.glob("reviewpoint-metrics-*")) == []
