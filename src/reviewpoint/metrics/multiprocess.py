"""Metrics of many worker processes, added up in one directory.

prometheus_client's multiprocess mode: with `PROMETHEUS_MULTIPROC_DIR` set when
it is imported, every process writes its values to memory-mapped files there,
and a scrape, answered by any worker, reads them all. Counters and histograms
of a worker that died still count (what it did happened); its share of a live
gauge (exports in progress) must go, or a crash would leave it "running" forever.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prometheus_client.multiprocess import mark_process_dead

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# A live gauge's file, e.g. gauge_livesum_4242.db: one per mode and process.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


@contextmanager
def worker_metrics_directory(*, workers: int, enabled: bool) -> Iterator[None]:
    """For `reviewpoint serve --workers N`: a fresh directory for this run, removed after.

    Set in the environment before uvicorn spawns its workers (new interpreters
    that inherit it and import prometheus_client afterwards). A directory the
    operator already set is used as it is. One worker needs none: its values
    stay in its memory.
    """
    if not enabled or workers == 1 or DIRECTORY_VARIABLE in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="reviewpoint-metrics-") as path:
        os.environ[DIRECTORY_VARIABLE] = path
        try:
            yield
        finally:
            del os.environ[DIRECTORY_VARIABLE]


def forget_dead_workers(path: str) -> None:
    """Drop the live-gauge files of processes that are gone.

    uvicorn replaces a worker that died but offers no hook to tell the metrics,
    so every scrape checks: a few files, one `kill(pid, 0)` each.
    """
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.match(name)
        if match and not _alive(int(match[1])):
            # Two workers scraping at once may both try: the second finds nothing.
            with suppress(FileNotFoundError):
                mark_process_dead(int(match[1]), path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        pass
    return True
