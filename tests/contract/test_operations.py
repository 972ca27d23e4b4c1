"""Every operation of the OpenAPI schema, fuzzed against the app with every check on.

Each generated case is sent with an admin's token and with one other kind of
credential in turn (an API key of each scope, none: fuzzing.Credentials), so
every operation meets every authorisation path. schemathesis checks each answer
against the documented statuses, media types, headers and schemas (export bodies
included, read back by the deserializers in fuzzing.py), and probes auth,
negative data and OPTIONS.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import reject

from reviewpoint.config import Settings
from reviewpoint.main import create_app
from tests.contract.fuzzing import (
    CURRENT_APP,
    FUZZ_SETTINGS,
    SCHEMA,
    Credentials,
    fuzz_settings,
    make_credentials,
    targets_admin,
)


@pytest.fixture
def credentials(settings: Settings) -> Credentials:
    return make_credentials(settings)


@pytest.fixture
def app(settings: Settings, credentials: Credentials) -> Iterator[FastAPI]:
    served = create_app(fuzz_settings(settings))
    with CURRENT_APP.serving(served, run="in process", db_url=settings.db_url):
        yield served


@SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_operation_answers_as_documented(
    case: schemathesis.Case, app: FastAPI, credentials: Credentials
) -> None:
    if targets_admin(case.path_parameters, credentials.admin_id):
        reject()
    for headers in credentials.for_next_case():
        case.call_and_validate(headers=headers)
