"""The same schema, fuzzed over real HTTP: uvicorn on 127.0.0.1, every operation.

The in-process runs (test_operations.py) never cross a socket; this one checks
what only a real server adds: framing, Content-Length and chunked streams,
compression, connection handling. Fewer examples, and no coverage phase (the
in-process run covers the schema's boundaries); the same checks and credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import reject
from hypothesis import settings as hypothesis_settings

from reviewpoint.config import Settings
from tests.conftest import LiveServer
from tests.contract.fuzzing import (
    DOCUMENT,
    EXAMPLES,
    FUZZ_SETTINGS,
    Credentials,
    config,
    fuzz_settings,
    make_credentials,
    targets_admin,
)

LIVE = schemathesis.openapi.from_dict(DOCUMENT, config=config(coverage=False))


@pytest.fixture
def credentials(settings: Settings) -> Credentials:
    return make_credentials(settings)


@pytest.fixture
def server(settings: Settings, credentials: Credentials) -> Iterator[LiveServer]:
    with LiveServer(fuzz_settings(settings)) as live:
        yield live


@LIVE.parametrize()
@hypothesis_settings(FUZZ_SETTINGS, max_examples=max(2, EXAMPLES // 2))
def test_operation_answers_as_documented_over_http(
    case: schemathesis.Case, server: LiveServer, credentials: Credentials
) -> None:
    if targets_admin(case.path_parameters, credentials.admin_id):
        reject()
    for headers in credentials.for_next_case():
        response: Any = case.call_and_validate(base_url=server.url, headers=headers)
        assert response.request.url.startswith("http://127.0.0.1:")
