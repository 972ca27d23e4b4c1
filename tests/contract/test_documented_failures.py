"""The answers no healthy fuzzing run meets are documented too: every operation,
fuzzed while its database is out of reach, answers only statuses, headers and
bodies its schema states; every body over the size limit gets the 413 each
operation with a body documents, and a NUL in any query the documented 422.

The database is out of reach as an operator meets it: a SQLite file on a volume
that is not mounted, a PostgreSQL port nothing listens on. Each case goes out
with an administrator's token, valid by signature, so every operation reaches
the point where it needs the database.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import make_url

from reviewpoint.config import Settings, load_settings
from reviewpoint.main import create_app
from tests.conftest import BACKENDS, PG_URL
from tests.contract.fuzzing import CURRENT_APP, DOCUMENT, FUZZ_SETTINGS, config, fuzz_settings
from tests.data import bearer_headers

DOWN = schemathesis.openapi.from_dict(DOCUMENT, config=config(coverage=False))
DOWN.app = CURRENT_APP
# Whether the answer is the one documented: the checks that compare it with the
# schema (not_a_server_error would fail every documented 503).
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(params=BACKENDS)
def unreachable_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'not-mounted' / 'reviewpoint.db'}"
    else:
        db_url = make_url(PG_URL).set(port=_closed_port()).render_as_string(hide_password=False)
    return load_settings(
        _env_file=None,
        env="test",
        db_url=db_url,
        log_level="error",
        jwt_secret_key=secrets.token_urlsafe(32),
    )


@pytest.fixture
def app_without_database(unreachable_settings: Settings) -> Iterator[FastAPI]:
    served = create_app(fuzz_settings(unreachable_settings))
    run = "database out of reach"
    with CURRENT_APP.serving(served, run=run, db_url=unreachable_settings.db_url):
        yield served


@DOWN.parametrize()
@hypothesis_settings(FUZZ_SETTINGS, max_examples=3)
def test_every_operation_answers_as_documented_without_its_database(
    case: schemathesis.Case, app_without_database: FastAPI, unreachable_settings: Settings
) -> None:
    token = bearer_headers(unreachable_settings, 1)
    response = case.call_and_validate(headers=token, checks=CONFORMANCE)
    documented = case.operation.definition.raw["responses"]
    if "503" in documented and case.operation.path != "/api/v1/health/ready":
        # Nothing an operation that needs the database answers can come from it.
        assert response.status_code >= 400, response.text


def _operations(*, with_a_body: bool = False) -> list[tuple[str, str]]:
    return [
        (path, method)
        for path, operations in DOCUMENT["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation or not with_a_body
    ]


def _url(path: str) -> str:
    return path.replace("{user_id}", "1").replace("{key_id}", "1").replace("{name}", "x")


@pytest.mark.parametrize(("path", "method"), _operations(with_a_body=True))
def test_a_body_over_the_limit_is_the_documented_413(
    client: TestClient, settings: Settings, path: str, method: str
) -> None:
    operation: Any = DOWN[path][method.upper()]
    assert "413" in operation.definition.raw["responses"]
    body = b"{" + b" " * settings.max_body_bytes + b"}"
    response = client.request(
        method, _url(path), content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"detail": f"Request body exceeds {settings.max_body_bytes} bytes"}
    case = operation.Case(media_type="application/json")
    case.validate_response(response, checks=CONFORMANCE)


@pytest.mark.parametrize(("path", "method"), _operations())
def test_a_nul_in_any_query_is_the_documented_422(
    client: TestClient, path: str, method: str
) -> None:
    # A parameter the operation does not even take: the guard reads every one.
    response = client.request(method, _url(path), params={"probe": "a\x00b"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "probe"]
    DOWN[path][method.upper()].Case().validate_response(response, checks=CONFORMANCE)
