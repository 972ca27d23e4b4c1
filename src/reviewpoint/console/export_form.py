"""The export page's form: what it asks the API for, how many users match, and the
same export as a `curl` and a `reviewpoint export` command line.

Nothing here decides what an export holds: the form's values become the API's
query parameters, checked by the endpoints' own parameter schemas, and the
count is the export's own `count_rows` over the filters those schemas build
(the number the download's `X-Export-Rows` will carry).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode

from pydantic import ValidationError

from reviewpoint.db import Database, snapshot
from reviewpoint.errors import AppError
from reviewpoint.exports.anonymize import Pseudonyms
from reviewpoint.exports.columns import CHOOSABLE, FULL, MINIMAL
from reviewpoint.exports.formats import FORMATS
from reviewpoint.exports.query import count_rows
from reviewpoint.exports.request import ExportRequest
from reviewpoint.exports.schemas import ExportParameters, FullExportParameters

Kind = Literal["minimal", "full"]
# The API's query parameters the form offers, in the order commands show them.
PARAMETERS = (
    "format",
    "fields",
    "email",
    "is_active",
    "is_admin",
    "created_after",
    "created_before",
    "updated_since",
    "after_id",
    "limit",
    "anonymize",
    "bom",
)
FORMAT_NAMES = tuple(FORMATS)
FIELD_NAMES = tuple(CHOOSABLE)
DEFAULT_FIELDS = ",".join(name for name, _ in FULL.columns)
BEARER_VARIABLE = "REVIEWPOINT_TOKEN"
COUNT_PATH = "/console/export/count"


@dataclass(frozen=True)
class ExportChoice:
    """The form's values as the API takes them: blanks dropped, `fields` only on full."""

    kind: Kind
    query: dict[str, str]
    # What the form shows back, blanks included.
    form: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, values: Mapping[str, str]) -> ExportChoice:
        kind: Kind = "minimal" if values.get("kind") == "minimal" else "full"
        form = {name: values.get(name, "").strip() for name in PARAMETERS}
        # The format always shows in the command lines, the default one too.
        form["format"] = form["format"] or "csv"
        query = {name: value for name, value in form.items() if value}
        if kind == "minimal":
            query.pop("fields", None)
        if query.get("bom") not in (None, "true"):
            query.pop("bom")
        if query.get("anonymize") == "false":
            query.pop("anonymize")
        return cls(kind=kind, query=query, form={"kind": kind, **form})

    @property
    def endpoint(self) -> str:
        return "export-full" if self.kind == "full" else "export"

    @property
    def query_string(self) -> str:
        # Commas and colons as typed: the command lines stay readable (`+` is still %2B).
        return urlencode(self.query, safe=",:")

    def request(self, pseudonyms: Pseudonyms) -> ExportRequest:
        """The export these values ask for, checked as the endpoint checks them."""
        if self.kind == "full":
            return FullExportParameters(**self.query).export_request(FULL, pseudonyms=pseudonyms)
        return ExportParameters(**self.query).export_request(MINIMAL, pseudonyms=pseudonyms)


@dataclass(frozen=True)
class Preview:
    """What the page shows under the form: three ways to get the file (and where
    its count comes from), or the reason there is none."""

    choice: ExportChoice
    filename: str | None = None
    error: str | None = None
    api_url: str = ""
    curl: str = ""
    command: str = ""

    @property
    def download_url(self) -> str:
        query = self.choice.query_string
        return f"/console/download/{self.choice.endpoint}" + (f"?{query}" if query else "")

    @property
    def count_url(self) -> str:
        return f"{COUNT_PATH}?{urlencode({'kind': self.choice.kind, **self.choice.query})}"


@dataclass(frozen=True)
class Count:
    """The users an export would hold, or why it would not run."""

    rows: int | None = None
    error: str | None = None


def _checked(choice: ExportChoice, pseudonyms: Pseudonyms) -> ExportRequest | str:
    """The export `choice` asks for, or why its endpoint would refuse it."""
    try:
        return choice.request(pseudonyms)
    except ValidationError as error:
        return _validation_message(error)
    except AppError as error:
        return error.detail


def _validation_message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
    )


def preview(choice: ExportChoice, *, pseudonyms: Pseudonyms, base_url: str) -> Preview:
    """The file and the ways to get it, checked as the endpoint checks them; no count.

    Counting reads every matching row (a filter that matches most of a million
    users takes about 150 ms), so the page does not wait for it: the preview
    asks for the count once shown (`count_users`).
    """
    request = _checked(choice, pseudonyms)
    if isinstance(request, str):
        return Preview(choice, error=request)
    query = choice.query_string
    api_url = f"{base_url.rstrip('/')}/api/v1/users/{choice.endpoint}" + (
        f"?{query}" if query else ""
    )
    return Preview(
        choice,
        filename=request.filename,
        api_url=api_url,
        curl=curl_command(api_url, request.filename),
        command=cli_command(choice, request.filename),
    )


async def count_users(database: Database, choice: ExportChoice, *, pseudonyms: Pseudonyms) -> Count:
    """How many users the export would hold, counted in a snapshot as the export counts them."""
    request = _checked(choice, pseudonyms)
    if isinstance(request, str):
        return Count(error=request)
    async with snapshot(database.engine) as connection:
        return Count(rows=await count_rows(connection, request.filters))


def curl_command(api_url: str, filename: str) -> str:
    """The API call that downloads the same file, with an admin's bearer token."""
    # Double quotes: the shell fills in the token from the environment.
    header = f'"Authorization: Bearer ${BEARER_VARIABLE}"'
    return " ".join(["curl -fsS -H", header, "-o", shlex.quote(filename), shlex.quote(api_url)])


def cli_command(choice: ExportChoice, filename: str) -> str:
    """`reviewpoint export` with the same options: the same bytes, straight from the database."""
    words = ["reviewpoint", "export"]
    if choice.kind == "full":
        words.append("--full")
    for name, value in choice.query.items():
        if name == "bom":
            words.append("--bom")
        else:
            words += [f"--{name.replace('_', '-')}", value]
    words += ["-o", filename]
    return shlex.join(words)
