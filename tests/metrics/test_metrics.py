"""`/metrics` of one process: what each request, export and refusal adds, on each database.

Every app keeps its own metrics, so each test starts from zero. Streaming cases
run under a real uvicorn (`LiveServer`); the rest through the test client.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from reviewpoint.api_keys.schemas import Scope
from reviewpoint.config import Settings, load_settings
from reviewpoint.exports.formats import FORMATS
from reviewpoint.main import create_app
from reviewpoint.metrics.observer import FORMAT_LABELS, ExportMetrics
from tests.conftest import BACKENDS, LiveServer, eventually, pg_execute
from tests.data import (
    BULK_PASSWORD,
    create_api_key,
    execute_sql,
    insert_user,
    insert_users,
    login,
)
from tests.exports.test_export_admission import _fill, _held_export, _server
from tests.metrics.exposition import Series, label_values, parse, value

EXPORT_FULL = "/api/v1/users/export-full"
EXPORT = "/api/v1/users/export"
HEALTH = "/api/v1/health"
LOGIN = "/api/v1/auth/login"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "db_url": db_url,
        "log_level": "warning",
        "jwt_secret_key": secrets.token_urlsafe(32),
        **overrides,
    }
    return load_settings(_env_file=None, **values)


def _client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def _scrape(client: httpx.Client | TestClient) -> dict[Series, float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


def _key(db_url: str, scope: Scope = "users:export_full", name: str = "k") -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, [scope], name=name)[1]}


def _requests(samples: dict[Series, float], route: str, status: int, method: str = "GET") -> float:
    return value(
        samples, "reviewpoint_http_requests_total", route=route, method=method, status=str(status)
    )


def _exports(samples: dict[Series, float], outcome: str, endpoint: str = "export-full") -> float:
    return value(
        samples, "reviewpoint_exports_total", endpoint=endpoint, format="csv", outcome=outcome
    )


def _rejections(samples: dict[Series, float], kind: str, action: str) -> float:
    return value(samples, "reviewpoint_rejections_total", kind=kind, action=action)


# --- the exposition ----------------------------------------------------------------


def test_metrics_are_prometheus_text_named_reviewpoint_with_zeroed_counters(
    client: TestClient,
) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == PROMETHEUS_TEXT
    samples = parse(response.text)
    assert {name for name, _ in samples} >= {
        "reviewpoint_rejections_total",
        "reviewpoint_audit_write_failures_total",
        "reviewpoint_exports_in_progress",
    }
    assert all(name.startswith("reviewpoint_") for name, _ in samples)
    # Alerts see these series before the first event: one per kind and action, at 0.
    for kind, action in [
        ("rate", "export"),
        ("concurrency", "export"),
        ("rate", "login"),
        ("concurrency", "login"),
    ]:
        labels = frozenset({"kind": kind, "action": action}.items())
        assert ("reviewpoint_rejections_total", labels) in samples
    assert value(samples, "reviewpoint_audit_write_failures_total") == 0
    assert value(samples, "reviewpoint_exports_in_progress") == 0


def test_metrics_route_is_in_the_openapi_document(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert set(operation["responses"]) >= {"200", "401"}
    assert PROMETHEUS_TEXT in operation["responses"]["200"]["content"]


def test_scrapes_are_not_counted_so_two_in_a_row_agree(client: TestClient) -> None:
    client.get(HEALTH)
    first, second = client.get("/metrics").text, client.get("/metrics").text
    assert first == second
    assert "/metrics" not in label_values(parse(second), "reviewpoint_http_requests_total", "route")


# --- HTTP requests -----------------------------------------------------------------


def test_requests_are_counted_by_route_template_method_and_status(
    client: TestClient, db_url: str
) -> None:
    for _ in range(3):
        assert client.get(HEALTH).status_code == 200
    for user_id in (1, 2, 999_999):
        assert client.get(f"/api/v1/users/{user_id}").status_code == 401
    assert client.post(LOGIN, data={"username": "a@example.com"}).status_code == 422

    samples = _scrape(client)
    assert _requests(samples, HEALTH, 200) == 3
    assert _requests(samples, "/api/v1/users/{user_id}", 401) == 3
    assert _requests(samples, LOGIN, 422, method="POST") == 1
    routes = label_values(samples, "reviewpoint_http_requests_total", "route")
    assert not any(re.search(r"/\d", route) for route in routes), routes
    seconds = value(
        samples, "reviewpoint_http_request_duration_seconds_count", route=HEALTH, method="GET"
    )
    assert seconds == 3


def test_unknown_paths_and_methods_add_one_label_value_each(client: TestClient) -> None:
    for _ in range(25):
        assert client.get(f"/{uuid.uuid4().hex}/wp-login.php").status_code == 404
    assert client.request("BREW", HEALTH).status_code == 405
    assert client.request("PROPFIND", HEALTH).status_code == 405

    samples = _scrape(client)
    assert _requests(samples, "unmatched", 404) == 25
    assert _requests(samples, HEALTH, 405, method="other") == 2
    assert label_values(samples, "reviewpoint_http_requests_total", "route") == {
        "unmatched",
        HEALTH,
    }
    assert label_values(samples, "reviewpoint_http_requests_total", "method") == {"GET", "other"}


def test_a_request_refused_before_routing_counts_as_unmatched(db_url: str) -> None:
    with _client(_settings(db_url, max_body_bytes=1024)) as client:
        response = client.post("/api/v1/users", content=b"{" + b" " * 4096 + b"}")
        assert response.status_code == 413
        assert _requests(_scrape(client), "unmatched", 413, method="POST") == 1


def test_a_streamed_export_counts_its_status_at_start_and_duration_at_its_end(
    db_url: str,
) -> None:
    _fill(db_url, 3000)
    key = _key(db_url)
    settings = _settings(db_url, export_chunk_rows=100)
    with _server(settings) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        sock, status = _held_export(server, key)
        with sock:
            assert status == 200
            samples = _scrape(client)
            # Counted when the 200 went out; not yet timed: its body is still going.
            assert _requests(samples, EXPORT_FULL, 200) == 1
            timed = {"route": EXPORT_FULL, "method": "GET"}
            assert value(samples, "reviewpoint_http_request_duration_seconds_count", **timed) == 0
        assert eventually(
            lambda: (
                value(_scrape(client), "reviewpoint_http_request_duration_seconds_count", **timed)
                == 1
            )
        )


# --- exports -----------------------------------------------------------------------


def test_exports_are_counted_by_endpoint_format_and_outcome_with_rows_and_bytes(
    db_url: str,
) -> None:
    insert_users(db_url, [(f"user{i}@example.com", f"User {i}") for i in range(40)])
    full, minimal = _key(db_url), _key(db_url, "users:export", name="minimal")
    with _client(_settings(db_url)) as client:
        sizes = []
        for _ in range(3):
            response = client.get(EXPORT_FULL, headers=full)
            assert response.status_code == 200
            sizes.append(len(response.content))
        assert client.get(EXPORT_FULL).status_code == 401
        assert client.get(EXPORT_FULL, headers={"X-API-Key": "rvp_nope"}).status_code == 401
        assert client.get(EXPORT_FULL, headers=minimal).status_code == 403
        assert client.get(EXPORT, headers=minimal, params={"format": "xml"}).status_code == 400
        assert client.get(EXPORT, headers=minimal).status_code == 200

        samples = _scrape(client)
    assert _exports(samples, "completed") == 3
    assert _exports(samples, "denied") == 3
    assert _exports(samples, "completed", endpoint="export") == 1
    # A format nobody serves is not a label value: it counts as "other".
    assert (
        value(
            samples,
            "reviewpoint_exports_total",
            endpoint="export",
            format="other",
            outcome="invalid",
        )
        == 1
    )
    labels = {"endpoint": "export-full", "format": "csv"}
    assert value(samples, "reviewpoint_export_rows_total", **labels) == 3 * 40
    assert value(samples, "reviewpoint_export_bytes_total", **labels) == sum(sizes)
    durations = value(
        samples, "reviewpoint_export_duration_seconds_count", **labels, outcome="completed"
    )
    assert durations == 3  # refused calls never streamed: they are not timed
    le_hour = {**labels, "outcome": "completed", "le": "3600.0"}
    assert value(samples, "reviewpoint_export_duration_seconds_bucket", **le_hour) == 3
    assert value(samples, "reviewpoint_exports_in_progress") == 0


def test_export_rate_limit_refusals_count_as_limited_and_as_rate_rejections(
    db_url: str,
) -> None:
    key = _key(db_url)
    with _client(_settings(db_url, export_rate_limit="2/minute")) as client:
        statuses = [client.get(EXPORT_FULL, headers=key).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        samples = _scrape(client)
    assert _exports(samples, "limited") == 1
    assert _rejections(samples, "rate", "export") == 1
    assert _rejections(samples, "concurrency", "export") == 0
    assert _requests(samples, EXPORT_FULL, 429) == 1


def test_a_held_export_is_in_progress_until_it_ends_and_a_second_is_a_concurrency_rejection(
    db_url: str,
) -> None:
    _fill(db_url, 4000)
    key = _key(db_url)
    settings = _settings(db_url, export_chunk_rows=100, export_max_concurrent_per_credential=1)
    with _server(settings) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        sock, status = _held_export(server, key)
        with sock:
            assert status == 200
            assert value(_scrape(client), "reviewpoint_exports_in_progress") == 1
            assert client.get(EXPORT_FULL, headers=key).status_code == 429
            samples = _scrape(client)
            assert _rejections(samples, "concurrency", "export") == 1
            assert _exports(samples, "limited") == 1
        # The client hung up: the export ends as aborted, and is no longer in progress.
        assert eventually(lambda: _exports(_scrape(client), "aborted") == 1)
        samples = _scrape(client)
    assert value(samples, "reviewpoint_exports_in_progress") == 0
    assert _requests(samples, EXPORT_FULL, 200) == 1


def test_an_export_that_cannot_start_counts_as_failed_with_its_503(
    db_url: str, tmp_path: Path
) -> None:
    if db_url.startswith("postgresql"):
        url = make_url(db_url).set(database="rvp_no_such_database")
        down = url.render_as_string(hide_password=False)
    else:
        down = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'reviewpoint.db'}"
    key = _key(db_url)  # a real key, of a database this app cannot reach
    with _client(_settings(down, log_level="error")) as client:
        response = client.get(EXPORT_FULL, headers=key)
        assert response.status_code == 503
        samples = _scrape(client)
    assert _exports(samples, "failed") == 1
    assert _requests(samples, EXPORT_FULL, 503) == 1


# Only a database server has connections another session can kill.
@pytest.mark.parametrize(
    "db_url", [backend for backend in BACKENDS if backend == "postgresql"], indirect=True
)
def test_an_export_that_dies_mid_stream_counts_as_failed_not_as_its_200(db_url: str) -> None:
    _fill(db_url, 20_000)
    key = _key(db_url)
    database = make_url(db_url).database
    settings = _settings(db_url, export_chunk_rows=100)
    with _server(settings) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        sock, status = _held_export(server, key)
        with sock:
            assert status == 200
            pg_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            )
            # The export finds its connection gone at its next read; let it read.
            sock.settimeout(20)
            while sock.recv(65536):
                pass
        assert eventually(lambda: _exports(_scrape(client), "failed") == 1)
        samples = _scrape(client)
    assert _exports(samples, "completed") == 0
    assert value(samples, "reviewpoint_exports_in_progress") == 0
    failed = {"endpoint": "export-full", "format": "csv", "outcome": "failed"}
    assert value(samples, "reviewpoint_export_duration_seconds_count", **failed) == 1
    # HTTP said 200 before the first byte; that is what the request metric keeps.
    assert _requests(samples, EXPORT_FULL, 200) == 1


# --- refusals and the audit hook ------------------------------------------------------


def test_login_rate_limit_refusals_count_as_rate_rejections_of_logins(db_url: str) -> None:
    insert_user(db_url, "someone@example.com")
    with _client(_settings(db_url, login_rate_limit="2/minute")) as client:
        form = {"username": "someone@example.com", "password": "wrong-password"}
        statuses = [client.post(LOGIN, data=form).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        samples = _scrape(client)
    assert _rejections(samples, "rate", "login") == 1
    assert _rejections(samples, "rate", "export") == 0
    assert _requests(samples, LOGIN, 401, method="POST") == 2
    assert _requests(samples, LOGIN, 429, method="POST") == 1


def test_password_checks_refused_at_the_hashing_cap_count_as_concurrency_rejections(
    db_url: str,
) -> None:
    settings = _settings(db_url, login_rate_limit="10000/minute")

    async def burst(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            form = {"username": "nobody@example.com", "password": "nope-nope"}
            return await asyncio.gather(*(client.post(LOGIN, data=form) for _ in range(40)))

    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:
        responses = asyncio.run(burst(server.url))
        samples = _scrape(client)
    refused = sum(response.status_code == 429 for response in responses)
    assert refused > 0
    assert _rejections(samples, "concurrency", "login") == refused
    assert _rejections(samples, "rate", "login") == 0
    assert _requests(samples, LOGIN, 429, method="POST") == refused


def test_audit_write_failures_are_counted(client: TestClient, db_url: str) -> None:
    _fill(db_url, 20)
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    execute_sql(db_url, "ALTER TABLE export_audit RENAME TO export_audit_gone")
    assert client.get("/api/v1/users/export-full", headers=key).status_code == 200
    # The record's start and its end could not be written.
    assert eventually(lambda: value(_scrape(client), "reviewpoint_audit_write_failures_total") == 2)


# --- switched off, guarded, and anonymous --------------------------------------------


def test_metrics_switched_off_answer_404_and_nothing_is_collected(db_url: str) -> None:
    key = _key(db_url)
    with _client(_settings(db_url, metrics=False)) as client:
        assert client.get(EXPORT_FULL, headers=key).status_code == 200
        response = client.get("/metrics")
        assert response.status_code == 404
        assert response.json() == {"detail": "Not Found"}
        assert client.app.state.metrics is None  # type: ignore[attr-defined]
        observers = client.app.state.export_observers  # type: ignore[attr-defined]
        assert not any(isinstance(observer, ExportMetrics) for observer in observers)
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_metrics_token_when_set_is_required_as_a_bearer_token(db_url: str) -> None:
    token = secrets.token_urlsafe(24)
    with _client(_settings(db_url, metrics_token=token)) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"X-Api-Key": token},
        ):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json() == {"detail": "Missing or wrong metrics token"}
            assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        for scheme in ("Bearer", "bearer"):
            answered = client.get("/metrics", headers={"Authorization": f"{scheme} {token}"})
            assert answered.status_code == 200
            assert answered.headers["content-type"] == PROMETHEUS_TEXT


def test_no_label_value_names_a_user_an_email_or_a_key(db_url: str) -> None:
    insert_users(db_url, [(f"person{i}@example.org", f"Person {i}") for i in range(5)])
    admin_email = "boss@example.org"
    admin_id = insert_user(db_url, admin_email, is_admin=True)
    key_id, secret = create_api_key(db_url, ["users:export_full", "users:export"], name="sync-job")
    key_prefix = secret.split("_")[1]
    with _client(_settings(db_url)) as client:
        admin = login(client, admin_email, BULK_PASSWORD)
        client.get(EXPORT_FULL, headers=admin)
        client.get(EXPORT_FULL, headers={"X-API-Key": secret})
        client.get(EXPORT, headers={"X-API-Key": secret}, params={"email": "person1@example.org"})
        client.get(EXPORT, headers={"X-API-Key": secret}, params={"format": "person2@example.org"})
        client.get(f"/api/v1/users/{admin_id}", headers=admin)
        client.get(f"/api/v1/api-keys/{key_id}", headers=admin)
        client.get("/person3@example.org")
        text = client.get("/metrics").text
    assert "@" not in text
    for secret_part in (secret, key_prefix, "sync-job", "boss", "person"):
        assert secret_part not in text
    labels = {label_value for _, labels in parse(text) for _, label_value in labels if label_value}
    assert str(admin_id) not in labels
    assert str(key_id) not in labels


def test_every_export_format_has_its_own_metrics_label() -> None:
    """A format missing from FORMAT_LABELS would be counted as "other"."""
    assert set(FORMATS) == FORMAT_LABELS
