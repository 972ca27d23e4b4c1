"""Conditional exports: an `ETag` on every export, 304 while `If-None-Match` still matches."""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from reviewpoint.config import Settings, load_settings
from reviewpoint.exports import cursor
from reviewpoint.exports.formats import FORMATS
from reviewpoint.main import create_app
from tests.audit.records import settled_rows
from tests.conftest import LiveServer, eventually
from tests.data import bearer_headers, create_api_key, execute_sql, insert_user, insert_users
from tests.exports.live import SMALL_BUFFER
from tests.metrics.exposition import parse, value

EXPORT_FULL = "/api/v1/users/export-full"
EXPORT = "/api/v1/users/export"
USERS = "/api/v1/users"
IDENTITY = {"Accept-Encoding": "identity"}
STRONG = re.compile(r'"[0-9a-f]{32}"')
WEAK = re.compile(r'W/"[0-9a-f]{32}"')


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Many exports per test: the rate limit is lifted unless a test sets one."""
    return settings.model_copy(update={"export_rate_limit": "10000/minute"})


@pytest.fixture
def key(db_url: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1], **IDENTITY}


@pytest.fixture
def admin(db_url: str, settings: Settings) -> dict[str, str]:
    admin_id = insert_user(db_url, "admin@example.com", name="Admin", is_admin=True)
    return bearer_headers(settings, admin_id)


@pytest.fixture
def users(db_url: str) -> None:
    insert_users(db_url, [(f"user{n}@example.com", f"User {n}") for n in range(30)])


def _etag(client: TestClient, key: dict[str, str], path: str = EXPORT_FULL, **params: str) -> str:
    response = client.get(path, headers=key, params=params)
    assert response.status_code == 200, response.text
    return response.headers["ETag"]


def _conditional(
    client: TestClient, key: dict[str, str], tag: str, path: str = EXPORT_FULL, **params: str
) -> httpx.Response:
    return client.get(path, headers={**key, "If-None-Match": tag}, params=params)


# --- the validator on every export --------------------------------------------------


@pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL])
@pytest.mark.parametrize("export_format", list(FORMATS))
def test_every_format_of_both_exports_carries_an_etag(
    client: TestClient, key: dict[str, str], users: None, path: str, export_format: str
) -> None:
    response = client.get(path, headers=key, params={"format": export_format})
    assert response.status_code == 200
    tag = response.headers["ETag"]
    # XLSX zip entries carry the time they were written: same content, not same bytes.
    assert (WEAK if export_format == "xlsx" else STRONG).fullmatch(tag), tag
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("export_format", list(FORMATS))
def test_the_same_request_twice_has_the_same_etag(
    client: TestClient, key: dict[str, str], users: None, export_format: str
) -> None:
    first = client.get(EXPORT_FULL, headers=key, params={"format": export_format})
    second = client.get(EXPORT_FULL, headers=key, params={"format": export_format})
    assert first.headers["ETag"] == second.headers["ETag"]
    if export_format != "xlsx":
        # A strong tag promises the same bytes.
        assert first.content == second.content


def test_a_strong_etag_names_the_same_bytes_whatever_the_chunk_size(
    db_url: str, key: dict[str, str], users: None, settings: Settings
) -> None:
    """Chunking is not part of the tag: it must not change identity bytes either."""
    bodies = {}
    for chunk_rows in (7, 1000):
        chunked = settings.model_copy(update={"export_chunk_rows": chunk_rows})
        with TestClient(create_app(chunked)) as client:
            response = client.get(EXPORT_FULL, headers=key, params={"format": "json"})
            bodies[response.headers["ETag"]] = response.content
    assert len(bodies) == 1


# --- 304 -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL])
@pytest.mark.parametrize("export_format", list(FORMATS))
def test_a_matching_if_none_match_answers_304_with_no_body(
    client: TestClient, key: dict[str, str], users: None, path: str, export_format: str
) -> None:
    tag = _etag(client, key, path, format=export_format)
    response = _conditional(client, key, tag, path, format=export_format)
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == tag
    assert response.headers["Cache-Control"] == "no-store"
    # What a 200 of this format says about content negotiation, and nothing about a body.
    vary = "Accept-Encoding" if export_format != "xlsx" else None
    assert response.headers.get("Vary") == vary
    for absent in ("Content-Type", "Content-Disposition", "X-Export-Rows", cursor.HEADER):
        assert absent not in response.headers
    assert response.headers.get("Content-Length") in (None, "0")
    assert "RateLimit" in response.headers


def test_a_304_carries_the_rate_budget_and_counts_against_it(
    client: TestClient, db_url: str, settings: Settings
) -> None:
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"], name="rl")[1]}
    limited = settings.model_copy(update={"export_rate_limit": "3/minute"})
    with TestClient(create_app(limited)) as limited_client:
        tag = _etag(limited_client, key)
        first = _conditional(limited_client, key, tag)
        assert first.status_code == 304
        assert first.headers["RateLimit-Policy"] == '"exports";q=3;w=60'
        assert first.headers["RateLimit"].split(";")[1] == "r=1"
        assert _conditional(limited_client, key, tag).status_code == 304
        refused = _conditional(limited_client, key, tag)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "field",
    [
        '"0123456789abcdef0123456789abcdef", {tag}',
        '{tag}, "0123456789abcdef0123456789abcdef"',
        "W/{tag}",
        "*",
        '"a,b", {tag}',
    ],
    ids=["listed-last", "listed-first", "weak-form", "star", "comma-in-a-tag"],
)
def test_if_none_match_lists_star_and_weak_forms_match(
    client: TestClient, key: dict[str, str], users: None, field: str
) -> None:
    tag = _etag(client, key)
    response = _conditional(client, key, field.format(tag=tag))
    assert response.status_code == 304
    assert response.headers["ETag"] == tag


def test_repeated_if_none_match_lines_are_one_list(
    client: TestClient, key: dict[str, str], users: None
) -> None:
    tag = _etag(client, key)
    headers = [(name, value) for name, value in key.items()]
    headers += [("If-None-Match", '"0123456789abcdef0123456789abcdef"'), ("If-None-Match", tag)]
    response = client.get(EXPORT_FULL, headers=headers)
    assert response.status_code == 304


@pytest.mark.parametrize(
    "field",
    ['"0123456789abcdef0123456789abcdef"', "{bare}", '"{bare}-gzip"', "", ","],
    ids=["other-tag", "unquoted", "suffixed", "empty", "only-a-comma"],
)
def test_if_none_match_that_names_another_version_gets_the_export(
    client: TestClient, key: dict[str, str], users: None, field: str
) -> None:
    tag = _etag(client, key)
    response = _conditional(client, key, field.format(bare=tag.strip('"')))
    assert response.status_code == 200
    assert response.headers["ETag"] == tag
    assert response.content.count(b"@example.com") == 30


# --- what changes the tag --------------------------------------------------------------


def _create_via_api(client: TestClient, db_url: str, admin: dict[str, str], user_id: int) -> None:
    body = {"email": "new@example.com", "password": "new-password-1", "name": "New"}
    assert client.post(USERS, headers=admin, json=body).status_code == 201


def _update_via_api(client: TestClient, db_url: str, admin: dict[str, str], user_id: int) -> None:
    response = client.patch(f"{USERS}/{user_id}", headers=admin, json={"name": "Renamed"})
    assert response.status_code == 200, response.text


def _soft_delete_via_api(
    client: TestClient, db_url: str, admin: dict[str, str], user_id: int
) -> None:
    assert client.delete(f"{USERS}/{user_id}", headers=admin).status_code == 204


def _update_via_sql(client: TestClient, db_url: str, admin: dict[str, str], user_id: int) -> None:
    execute_sql(db_url, f"UPDATE users SET is_active = false WHERE id = {user_id}")


def _delete_via_sql(client: TestClient, db_url: str, admin: dict[str, str], user_id: int) -> None:
    execute_sql(db_url, f"DELETE FROM users WHERE id = {user_id}")


@pytest.mark.parametrize(
    "write",
    [_create_via_api, _update_via_api, _soft_delete_via_api, _update_via_sql, _delete_via_sql],
    ids=["create-api", "update-api", "soft-delete-api", "update-sql", "delete-sql"],
)
@pytest.mark.parametrize("export_format", ["csv", "xlsx"])
def test_any_write_to_users_makes_the_next_request_200_with_a_new_etag(
    client: TestClient,
    db_url: str,
    key: dict[str, str],
    admin: dict[str, str],
    users: None,
    write: Any,
    export_format: str,
) -> None:
    tag = _etag(client, key, format=export_format)
    assert _conditional(client, key, tag, format=export_format).status_code == 304
    write(client, db_url, admin, 2)
    response = _conditional(client, key, tag, format=export_format)
    assert response.status_code == 200
    assert response.headers["ETag"] != tag
    assert response.content
    again = _conditional(client, key, response.headers["ETag"], format=export_format)
    assert again.status_code == 304


def test_a_login_does_not_change_the_etag(
    client: TestClient, db_url: str, key: dict[str, str], admin: dict[str, str]
) -> None:
    tag = _etag(client, key)
    form = {"username": "admin@example.com", "password": "bulk-user-password"}
    assert client.post("/api/v1/auth/login", data=form).status_code == 200
    assert _conditional(client, key, tag).status_code == 304


VARIANTS: list[tuple[str, dict[str, str], dict[str, str]]] = [
    (EXPORT_FULL, {}, {}),
    (EXPORT, {}, {}),
    (EXPORT_FULL, {"format": "ndjson"}, {}),
    (EXPORT_FULL, {"format": "json"}, {}),
    (EXPORT_FULL, {"format": "xlsx"}, {}),
    (EXPORT_FULL, {"fields": "id,email"}, {}),
    (EXPORT_FULL, {"fields": "email,id"}, {}),
    (EXPORT_FULL, {"email": "user3@example.com"}, {}),
    (EXPORT_FULL, {"is_active": "true"}, {}),
    (EXPORT_FULL, {"is_admin": "false"}, {}),
    (EXPORT_FULL, {"created_after": "2000-01-01T00:00:00Z"}, {}),
    (EXPORT_FULL, {"created_before": "2100-01-01T00:00:00Z"}, {}),
    (EXPORT_FULL, {"updated_since": "2000-01-01T00:00:00Z"}, {}),
    (EXPORT_FULL, {"after_id": "5"}, {}),
    (EXPORT_FULL, {"limit": "5"}, {}),
    (EXPORT_FULL, {"bom": "true"}, {}),
    (EXPORT_FULL, {"excel_safe": "false"}, {}),
    (EXPORT_FULL, {"cursor": cursor.encode(0)}, {}),
    (EXPORT_FULL, {}, {"Accept-Encoding": "gzip"}),
]


def test_each_parameter_format_field_choice_and_encoding_has_its_own_etag(
    client: TestClient, key: dict[str, str], users: None
) -> None:
    tags = []
    for path, params, headers in VARIANTS:
        response = client.get(path, headers={**key, **headers}, params=params)
        assert response.status_code == 200, (path, params, response.text)
        tags.append(response.headers["ETag"])
    assert len(set(tags)) == len(VARIANTS), tags
    # A tag of one variant never revalidates another.
    for (path, params, headers), tag in zip(VARIANTS[1:], tags[:-1], strict=True):
        response = client.get(path, headers={**key, **headers, "If-None-Match": tag}, params=params)
        assert response.status_code == 200, (path, params)


def test_the_same_moment_in_another_zone_is_the_same_export(
    client: TestClient, key: dict[str, str], users: None
) -> None:
    utc = _etag(client, key, created_after="2020-01-01T00:00:00Z")
    paris = _etag(client, key, created_after="2020-01-01T01:00:00+01:00")
    assert utc == paris


def test_gzip_gets_the_weak_form_and_either_form_revalidates(
    client: TestClient, key: dict[str, str], users: None
) -> None:
    gzip = {**key, "Accept-Encoding": "gzip"}
    identity_tag = _etag(client, key)
    gzipped = client.get(EXPORT_FULL, headers=gzip)
    assert gzipped.headers["Content-Encoding"] == "gzip"
    # Compressed bytes depend on zlib and flush points: same content, weak tag.
    assert gzipped.headers["ETag"] == f"W/{identity_tag}"
    from_identity = client.get(EXPORT_FULL, headers={**gzip, "If-None-Match": identity_tag})
    assert from_identity.status_code == 304
    assert from_identity.headers["ETag"] == f"W/{identity_tag}"
    assert from_identity.headers["Vary"] == "Accept-Encoding"
    from_gzip = _conditional(client, key, gzipped.headers["ETag"])
    assert from_gzip.status_code == 304
    assert from_gzip.headers["ETag"] == identity_tag


def test_exports_with_last_login_at_carry_no_etag_and_always_answer_in_full(
    client: TestClient, key: dict[str, str], users: None
) -> None:
    """A login takes no change number, so the data version cannot vouch for that column."""
    fields = {"fields": "id,last_login_at"}
    response = client.get(EXPORT_FULL, headers=key, params=fields)
    assert response.status_code == 200
    assert "ETag" not in response.headers
    again = client.get(EXPORT_FULL, headers={**key, "If-None-Match": "*"}, params=fields)
    assert again.status_code == 200
    assert again.content == response.content


# --- refusals come first ------------------------------------------------------------


def test_credentials_scope_and_parameters_are_checked_before_a_304(
    client: TestClient, db_url: str, key: dict[str, str], users: None
) -> None:
    tag = _etag(client, key)
    minimal = {"X-API-Key": create_api_key(db_url, ["users:export"], name="minimal")[1]}
    for headers, params, status in [
        ({}, {}, 401),
        ({"X-API-Key": "rvp_not_a_key"}, {}, 401),
        (minimal, {}, 403),
        (key, {"format": "xml"}, 400),
        (key, {"limit": "0"}, 422),
        (key, {"cursor": "not-a-cursor"}, 422),
    ]:
        response = client.get(EXPORT_FULL, headers={**headers, "If-None-Match": "*"}, params=params)
        assert response.status_code == status, (headers, params, response.text)
        assert response.content.startswith(b'{"detail"')
    assert _conditional(client, key, tag).status_code == 304


def test_a_disabled_export_is_403_before_a_304(
    monkeypatch: pytest.MonkeyPatch, db_url: str, settings: Settings
) -> None:
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1]}
    monkeypatch.setenv("REVIEWPOINT_FEATURE_USERS_EXPORT_FULL", "false")
    disabled = load_settings(
        _env_file=None, env="test", db_url=db_url, jwt_secret_key=secrets.token_urlsafe(32)
    )
    with TestClient(create_app(disabled)) as client:
        response = client.get(EXPORT_FULL, headers={**key, "If-None-Match": "*"})
    assert response.status_code == 403
    assert response.json() == {"detail": "Feature 'users:export_full' is disabled"}


def test_a_cursor_ahead_of_the_database_is_409_even_with_if_none_match(
    client: TestClient, key: dict[str, str]
) -> None:
    ahead = cursor.encode(10**9)
    response = client.get(
        EXPORT_FULL, headers={**key, "If-None-Match": "*"}, params={"cursor": ahead}
    )
    assert response.status_code == 409


# --- audit and metrics ---------------------------------------------------------------


def test_a_304_is_audited_as_not_modified_with_no_rows_or_bytes(
    client: TestClient, db_url: str, settings: Settings, key: dict[str, str], users: None
) -> None:
    tag = _etag(client, key, format="ndjson", is_active="true")
    assert _conditional(client, key, tag, format="ndjson", is_active="true").status_code == 304
    assert _conditional(client, key, '"0123456789abcdef0123456789abcdef"').status_code == 200
    delivered, not_modified, changed = settled_rows(db_url, 3)
    assert (delivered["outcome"], delivered["status"], delivered["rows"]) == ("completed", 200, 30)
    assert not_modified["outcome"] == "not_modified"
    assert not_modified["status"] == 304
    assert (not_modified["rows"], not_modified["bytes"]) == (0, 0)
    assert not_modified["format"] == "ndjson"
    assert not_modified["actor_kind"] == "api_key"
    assert not_modified["finished_at"] is not None
    assert '"is_active": "true"' in not_modified["filters"]
    assert changed["outcome"] == "completed"

    admin_id = insert_user(db_url, "auditor@example.com", is_admin=True)
    listed = client.get(
        "/api/v1/exports/audit",
        headers=bearer_headers(settings, admin_id),
        params={"outcome": "not_modified"},
    )
    assert listed.status_code == 200, listed.text
    assert [record["status"] for record in listed.json()["data"]] == [304]


def test_a_304_is_counted_as_not_modified_and_never_in_progress(
    client: TestClient, key: dict[str, str], users: None
) -> None:
    tag = _etag(client, key)
    for _ in range(2):
        assert _conditional(client, key, tag).status_code == 304
    samples = parse(client.get("/metrics").text)
    labels = {"endpoint": "export-full", "format": "csv"}
    assert value(samples, "reviewpoint_exports_total", **labels, outcome="not_modified") == 2
    assert value(samples, "reviewpoint_exports_total", **labels, outcome="completed") == 1
    assert value(samples, "reviewpoint_export_rows_total", **labels) == 30
    assert value(samples, "reviewpoint_exports_in_progress") == 0


# --- no snapshot, no slot -------------------------------------------------------------


@contextmanager
def _export_pool_statements(app: Any) -> Iterator[list[str]]:
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    engine = app.state.database.export_engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


def test_a_304_sends_nothing_through_the_export_pool(
    client: TestClient, key: dict[str, str], users: None
) -> None:
    tag = _etag(client, key)
    with _export_pool_statements(client.app) as sent:
        assert _conditional(client, key, tag).status_code == 304
    assert sent == []
    with _export_pool_statements(client.app) as sent:
        assert _conditional(client, key, '"other"').status_code == 200
    assert sent  # the same request unconditional: a snapshot on the export pool


def _held_export(server: LiveServer, headers: dict[str, str]) -> socket.socket:
    """An export that reads nothing past its status line: it holds its slot and snapshot."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"GET {EXPORT_FULL} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode())
    sock.settimeout(20)
    assert sock.recv(12) == b"HTTP/1.1 200"
    return sock


def test_with_every_export_slot_busy_a_conditional_request_still_gets_304(
    db_url: str, settings: Settings
) -> None:
    insert_users(db_url, [(f"user{n}@example.com", f"User number {n:06d}") for n in range(4000)])
    key = {"X-API-Key": create_api_key(db_url, ["users:export_full"])[1], **IDENTITY}
    busy = settings.model_copy(
        update={
            "export_max_concurrent": 1,
            "export_max_concurrent_per_credential": 1,
            "export_chunk_rows": 100,
        }
    )
    with LiveServer(busy) as server, ExitStack() as held:
        server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            tag = client.get(EXPORT_FULL, headers=key).headers["ETag"]
            held.callback(_held_export(server, key).close)
            in_use = server.export_connections_in_use()
            assert in_use >= 1
            # Every slot of the worker and the credential's cap are taken: a full
            # export is refused, a revalidation is not.
            assert client.get(EXPORT_FULL, headers=key).status_code == 429
            started = time.perf_counter()
            response = client.get(EXPORT_FULL, headers={**key, "If-None-Match": tag})
            assert response.status_code == 304
            assert time.perf_counter() - started < 2
            assert server.export_connections_in_use() == in_use
        held.close()
        assert eventually(lambda: server.export_connections_in_use() == 0)


# --- a real client --------------------------------------------------------------------


def _curl(*arguments: str) -> tuple[int, bytes]:
    """curl's status code and body."""
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--write-out", "\n%{http_code}", *arguments],
        capture_output=True,
        check=True,
        timeout=30,
    )
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def test_curl_etag_save_and_compare_get_304_until_a_user_changes(
    live_server: LiveServer, db_url: str, tmp_path: Path, users: None
) -> None:
    secret = create_api_key(db_url, ["users:export_full"])[1]
    url = live_server.url + EXPORT_FULL
    etag, out = tmp_path / "etag.txt", tmp_path / "users.csv"
    # As README "Conditional requests" shows it.
    command = ["--fail", "-H", f"X-API-Key: {secret}"]
    command += ["--etag-compare", str(etag), "--etag-save", str(etag), "-o", str(out), url]

    status, _ = _curl(*command)
    assert status == 200
    first = out.read_bytes()
    assert first.count(b"@example.com") == 30
    saved = etag.read_text().strip()
    assert STRONG.fullmatch(saved)

    status, _ = _curl(*command)
    assert status == 304
    assert out.read_bytes() == first  # curl leaves the saved copy as it is
    assert etag.read_text().strip() == saved

    execute_sql(db_url, "UPDATE users SET name = 'Changed' WHERE id = 1")
    status, _ = _curl(*command)
    assert status == 200
    assert b"Changed" in out.read_bytes()
    assert etag.read_text().strip() != saved


# --- the schema ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [EXPORT, EXPORT_FULL])
def test_openapi_documents_the_etag_the_304_and_if_none_match(
    client: TestClient, path: str
) -> None:
    operation = client.get("/openapi.json").json()["paths"][path]["get"]
    assert "ETag" in operation["responses"]["200"]["headers"]
    assert "ETag" in operation["responses"]["304"]["headers"]
    assert "If-None-Match" in operation["responses"]["304"]["description"]
    headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
    assert "if-none-match" in {name.lower() for name in headers}
