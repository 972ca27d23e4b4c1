"""Log lines an operator can use: every line names its request, in text or JSON.

The server cases run `reviewpoint serve` as a process (`served_process`) and
read everything it wrote on stdout and stderr, uvicorn's own lines included.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reviewpoint.config import Settings, load_settings
from reviewpoint.exports.attempt import ExportAttempt
from reviewpoint.logs import configure_logging
from reviewpoint.request_id import current_request_id
from tests.conftest import LiveServer, eventually, served_process
from tests.data import create_api_key, insert_users

EXPORT_FULL = "/api/v1/users/export-full"
HEALTH = "/api/v1/health"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line as JSON; fails on the first line that is not."""
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return lines


def _access_lines(lines: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "uvicorn.access" and line["path"] == path]


@pytest.fixture
def app_log(live_server: LiveServer) -> Iterator[io.StringIO]:
    """What the live server's app writes through its own handler (`reviewpoint.*`)."""
    buffer = io.StringIO()
    (handler,) = logging.getLogger("reviewpoint").handlers
    assert isinstance(handler, logging.StreamHandler)
    before = handler.setStream(buffer)
    yield buffer
    handler.setStream(before)


def test_json_logs_every_line_is_json_and_access_lines_carry_the_request_id(
    db_url: str, tmp_path: Path
) -> None:
    insert_users(db_url, [(f"user{i}@example.com", f"User {i}") for i in range(5)])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    log = tmp_path / "server.log"
    with served_process(db_url, log, workers=2, log_format="json", log_level="info") as url:
        probe = httpx.get(url + HEALTH, headers={"X-Request-ID": "probe-1"}, timeout=10)
        export = httpx.get(url + EXPORT_FULL, headers={**key, "X-Request-ID": "export-1"})
        anonymous = httpx.get(url + EXPORT_FULL, timeout=10)
        unknown = httpx.get(url + "/no/such/path", timeout=10)
    assert [probe.status_code, export.status_code, anonymous.status_code, unknown.status_code] == [
        200,
        200,
        401,
        404,
    ]
    lines = _json_lines(log.read_text(encoding="utf-8"))

    for line in lines:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= set(line), line
        assert ISO_UTC.match(line["timestamp"]), line
    # Outside a request (start-up, shutdown) the id is null, never a made-up one.
    assert any(line["logger"] == "uvicorn.error" and line["request_id"] is None for line in lines)

    (probe_line,) = _access_lines(lines, HEALTH)[-1:]
    assert probe_line["request_id"] == "probe-1"
    assert (probe_line["method"], probe_line["status"]) == ("GET", 200)
    export_lines = _access_lines(lines, EXPORT_FULL)
    assert [(line["request_id"], line["status"]) for line in export_lines] == [
        ("export-1", 200),
        (anonymous.headers["X-Request-ID"], 401),
    ]
    (unknown_line,) = _access_lines(lines, "/no/such/path")
    assert unknown_line["request_id"] == unknown.headers["X-Request-ID"]
    assert unknown_line["status"] == 404

    export_messages = [
        line["message"]
        for line in lines
        if line["logger"] == "reviewpoint.exports" and line["request_id"] == "export-1"
    ]
    assert len(export_messages) == 2, export_messages
    assert export_messages[0].startswith("export users_full_export.csv started by ")
    assert "completed" in export_messages[1]


@SQLITE_ONLY
def test_text_logs_name_the_request_on_access_lines(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with served_process(db_url, log, log_level="info") as url:
        response = httpx.get(url + HEALTH, headers={"X-Request-ID": "text-probe-1"}, timeout=10)
        generated = httpx.get(url + "/no/such/path", timeout=10).headers["X-Request-ID"]
    assert response.status_code == 200
    text = log.read_text(encoding="utf-8")
    assert re.search(
        r" INFO uvicorn\.access \[text-probe-1\] .*\"GET /api/v1/health HTTP/1\.1\" 200", text
    )
    assert re.search(
        rf" INFO uvicorn\.access \[{generated}\] .*\"GET /no/such/path HTTP/1\.1\" 404", text
    )
    assert re.search(r" INFO uvicorn\.error \[-\] Application startup complete", text)


def test_json_lines_keep_extra_fields_and_the_traceback_on_one_line() -> None:
    buffer = io.StringIO()
    configure_logging("info", "json")
    (handler,) = logging.getLogger("reviewpoint").handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    token = current_request_id.set("line-test-1")
    try:
        try:
            raise ValueError("broken\nacross lines")
        except ValueError:
            logging.getLogger("reviewpoint.exports").exception(
                "export %s failed", "users.csv", extra={"audit_id": 41}
            )
    finally:
        current_request_id.reset(token)
        configure_logging("warning", "text")
    (line,) = _json_lines(buffer.getvalue())
    assert line["level"] == "ERROR"
    assert line["logger"] == "reviewpoint.exports"
    assert line["message"] == "export users.csv failed"
    assert line["request_id"] == "line-test-1"
    assert line["audit_id"] == 41
    assert line["exception"].startswith("Traceback")
    assert "ValueError: broken\nacross lines" in line["exception"]


class NumberingObserver:
    """Stands in for the audit trail: numbers each export as it starts."""

    async def started(self, attempt: ExportAttempt) -> None:
        attempt.audit_id = 41

    async def finished(self, attempt: ExportAttempt) -> None:
        pass


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings(
        _env_file=None, env="test", db_url=db_url, log_level="info", log_format="json"
    )


def test_export_log_lines_carry_the_audit_record_as_a_field(
    live_server: LiveServer, db_url: str, app_log: io.StringIO
) -> None:
    insert_users(db_url, [("someone@example.com", "Someone")])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    state = live_server.server.config.app.state
    state.export_observers = [*state.export_observers, NumberingObserver()]
    headers = {**key, "X-Request-ID": "audited-1"}
    assert httpx.get(live_server.url + EXPORT_FULL, headers=headers, timeout=10).status_code == 200

    def export_lines() -> list[dict[str, Any]]:
        lines = _json_lines(app_log.getvalue())
        return [line for line in lines if line["request_id"] == "audited-1"]

    # The last line is written just after the client has every byte.
    assert eventually(lambda: len(export_lines()) == 2), app_log.getvalue()
    lines = export_lines()
    assert [line["audit_id"] for line in lines] == [41, 41]
    assert all("(audit 41)" in line["message"] for line in lines)
