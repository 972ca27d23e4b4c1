"""The same schema, fuzzed over real HTTP: uvicorn on 127.0.0.1, every operation.

The in-process runs (test_operations.py) never cross a socket; this one checks
what only a real server adds: framing, Content-Length and chunked streams,
compression, connection handling. Fewer examples, and no coverage phase (the
in-process run covers the schema's boundaries); the same checks and credentials.
One server and database per backend serve every operation, in the schema's order.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import reject
from hypothesis import settings as hypothesis_settings

from reviewpoint.config import load_settings
from tests.conftest import BACKENDS, LiveServer, migrated_database
from tests.contract.fuzzing import (
    DOCUMENT,
    EXAMPLES,
    FUZZ_SETTINGS,
    REQUESTS,
    Credentials,
    backend_of,
    config,
    fuzz_settings,
    make_credentials,
    targets_admin,
)

LIVE = schemathesis.openapi.from_dict(DOCUMENT, config=config(coverage=False))


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Credentials, requests.Session]]:
    """One server and database per backend for every operation: a database each
    would cost more than this run's requests on PostgreSQL."""
    folder = tmp_path_factory.mktemp("live")
    with migrated_database(request, folder, request.param) as db_url:
        settings = load_settings(
            _env_file=None,
            env="test",
            db_url=db_url,
            log_level="warning",
            jwt_secret_key=secrets.token_urlsafe(32),
        )
        credentials = make_credentials(settings)
        with LiveServer(fuzz_settings(settings)) as server, requests.Session() as session:
            run = f"over HTTP ({backend_of(db_url)})"
            session.hooks["response"].append(lambda *_args, **_kwargs: REQUESTS.update([run]))
            yield server, credentials, session


@LIVE.parametrize()
@hypothesis_settings(FUZZ_SETTINGS, max_examples=max(2, EXAMPLES // 2))
def test_operation_answers_as_documented_over_http(
    case: schemathesis.Case, live: tuple[LiveServer, Credentials, requests.Session]
) -> None:
    server, credentials, session = live
    if targets_admin(case.path_parameters, credentials.admin_id):
        reject()
    for headers in credentials.for_next_case():
        response: Any = case.call_and_validate(
            base_url=server.url, session=session, headers=headers
        )
        assert response.request.url.startswith("http://127.0.0.1:")
