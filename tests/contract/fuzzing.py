"""What the contract tests share: the schema under test, its checks, the export
deserializers, and the credentials a run uses.

The schema is the app's own `/openapi.json`, loaded once at import (it does not
depend on the database); each test then sends its cases to an app of its own,
on a fresh database of each backend.

Examples per operation and the seed come from the environment, so CI stays
short and repeatable while a longer run explores more (README, "Schema fuzzing"):

- `REVIEWPOINT_FUZZ_EXAMPLES`: examples per operation (default 8).
- `REVIEWPOINT_FUZZ_RANDOM=1`: a random seed each run instead of the fixed one;
  Hypothesis prints the seed of a failure (`--hypothesis-seed=N` replays it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import openpyxl
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.python import asgi
from starlette.types import ASGIApp, Receive, Scope, Send

from reviewpoint.config import Settings, load_settings
from reviewpoint.exports.columns import TIMESTAMP_FORMAT
from reviewpoint.exports.formats.xlsx import XLSX
from reviewpoint.main import create_app
from tests.conftest import FUZZING_REQUESTS
from tests.data import bearer_headers, create_api_key, insert_user

# A token that outlives any run.
_LONG = timedelta(hours=1)
EXAMPLES = int(os.environ.get("REVIEWPOINT_FUZZ_EXAMPLES", "8"))
RANDOM_SEED = os.environ.get("REVIEWPOINT_FUZZ_RANDOM", "") == "1"

FUZZ_SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    derandomize=not RANDOM_SEED,
    deadline=None,
    # Each example is real HTTP on a real database (slow by Hypothesis's measure),
    # and one database and app serve all the examples of an operation on purpose.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    database=None,
)

# A schema-valid request gets 2xx, 3xx, 401, 403, 404, 409, 429 or 5xx (the
# positive_data_acceptance defaults), except where no schema can rule it out:
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
# `bom` and `excel_safe` apply to CSV alone, a `fields` name may not repeat, and
# /export documents `cursor` and `fields` as parameters it refuses: rules across
# parameters, or within one list, which OpenAPI cannot state (400).
_EXPORTS = [*_ACCEPTED, "400"]
# And `cursor` is opaque: only the server knows which strings it issued (422).
# /export, without `cursor`, keeps 422 a failure for every shared parameter.
_EXPORT_FULL = [*_EXPORTS, "422"]


def _accepting(path: str, statuses: list[str]) -> dict[str, Any]:
    return {
        "include-path": path,
        "checks": {"positive_data_acceptance": {"expected-statuses": statuses}},
    }


def config(*, coverage: bool = True) -> schemathesis.Config:
    """Every check on (their default); `coverage`: the phase that walks the schema's
    boundaries and undeclared methods, once per operation."""
    return schemathesis.Config.from_dict(
        {
            "phases": {"coverage": {"enabled": coverage}},
            "operations": [
                _accepting("/api/v1/users/export", _EXPORTS),
                _accepting("/api/v1/users/export-full", _EXPORT_FULL),
            ],
        }
    )


def _documented_schema() -> dict[str, Any]:
    # Any settings do: the document depends on none of them.
    settings = load_settings(
        _env_file=None,
        env="test",
        db_url="sqlite+aiosqlite:///:memory:",
        log_level="error",
        jwt_secret_key=secrets.token_urlsafe(32),
    )
    document: dict[str, Any] = create_app(settings).openapi()
    return document


# Requests each kind of fuzzing run sent, by run and backend, for the summary at
# the end of the run (tests/conftest.py; README, "Reliability").
REQUESTS = FUZZING_REQUESTS


class CurrentApp:
    """The ASGI app the schema sends to: the app of the test running now.

    The schema is loaded once, before any test has a database; each test puts
    its own app here (`serving`), lifespan included, so the checks' own probes
    (ignored_auth, use_after_free, ...) reach the same app as the cases.

    It counts the requests each kind of run sends, per backend (REQUESTS).
    """

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.run = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no test is serving an app"
        if scope["type"] == "http":
            REQUESTS[self.run] += 1
        await self.app(scope, receive, send)

    @contextmanager
    def serving(self, app: ASGIApp, *, run: str, db_url: str) -> Iterator[None]:
        self.app = app
        self.run = f"{run} ({backend_of(db_url)})"
        try:
            yield
        finally:
            # schemathesis starts the lifespan at the first request and keeps it until told.
            asgi.shutdown_lifespans()
            self.app = None


def backend_of(db_url: str) -> str:
    return "SQLite" if db_url.startswith("sqlite") else "PostgreSQL"


CURRENT_APP = CurrentApp()
DOCUMENT = _documented_schema()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT, config=config())
SCHEMA.app = CURRENT_APP


def fuzz_settings(settings: Settings) -> Settings:
    """The test settings with budgets no run reaches: a 429 would end what a run explores."""
    return settings.model_copy(
        update={"login_rate_limit": "10000/minute", "export_rate_limit": "10000/minute"}
    )


@dataclass
class Credentials:
    """One of each kind a caller can hold, and the admin's id.

    The run's admin is its own identity: the data a run generates never names
    it (`targets_admin`), so no case can deactivate, demote or delete the
    account every other case authenticates with.

    Each case goes out twice: with the admin's token (every operation accepts
    it, so every case reaches its handler) and with the next of the other kinds
    in turn (a key of each scope, none), so every operation meets each kind
    within a few cases at half the cost of sending each case four times.
    """

    admin_id: int
    admin: dict[str, str]
    others: list[dict[str, str]]
    _turn: int = 0

    def for_next_case(self) -> list[dict[str, str]]:
        other = self.others[self._turn % len(self.others)]
        self._turn += 1
        return [self.admin, other]


def make_credentials(settings: Settings) -> Credentials:
    db_url = settings.db_url
    admin_id = insert_user(db_url, "fuzz-admin@example.com", name="Fuzz admin", is_admin=True)
    _, export_key = create_api_key(db_url, ["users:export"], name="fuzz export")
    _, full_key = create_api_key(db_url, ["users:export_full"], name="fuzz export_full")
    return Credentials(
        admin_id=admin_id,
        admin=bearer_headers(settings, admin_id, lifetime=_LONG),
        others=[{"X-API-Key": export_key}, {"X-API-Key": full_key}, {}],
    )


def targets_admin(path_parameters: dict[str, Any] | None, admin_id: int) -> bool:
    return bool(path_parameters) and path_parameters.get("user_id") == admin_id


# Export bodies read back into the records their schemas describe
# (reviewpoint/exports/body_schemas.py).


@schemathesis.deserializer("text/csv")
def read_csv(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    text = response.content.decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@schemathesis.deserializer("application/x-ndjson")
def read_ndjson(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return [json.loads(line) for line in response.content.decode("utf-8").splitlines() if line]


@schemathesis.deserializer(XLSX.media_type)
def read_xlsx(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    rows = list(workbook.active.iter_rows(values_only=True))  # type: ignore[union-attr]
    header, records = rows[0], rows[1:]
    return [
        {str(name): _xlsx_value(value) for name, value in zip(header, row, strict=True)}
        for row in records
    ]


def _xlsx_value(value: object) -> object:
    # Excel dates carry no zone: the export writes them in UTC.
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).strftime(TIMESTAMP_FORMAT)
    return value
