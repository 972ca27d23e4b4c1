"""`reviewpoint export`: what GET /api/v1/users/export[-full] sends, straight from the database.

Built from the HTTP exports' own pieces: the options are checked by the
endpoints' parameter schemas, the rows come from `open_export` in one
snapshot, and the attempt goes to the audit trail. So the file holds exactly
the bytes the endpoint would send for the same parameters and data. The
command adds a file that appears only once complete (`output.py`), a progress
bar on a terminal, and the cursor for the next incremental run.

Feature flags, rate limits and concurrency caps govern the HTTP API's callers
and do not apply here: whoever runs this holds the database's credentials.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from sqlalchemy.exc import DBAPIError

from reviewpoint import __version__
from reviewpoint.audit.observer import AuditObserver
from reviewpoint.audit.service import one_line
from reviewpoint.auth.deps import ExportPrincipal
from reviewpoint.cli.console import current_settings, err, fail, one_line_errors, run
from reviewpoint.cli.output import AtomicFile, Output, StandardOutput, replace_atomically
from reviewpoint.config import Settings
from reviewpoint.db import Database
from reviewpoint.errors import AppError, ServiceUnavailable
from reviewpoint.exports import cursor
from reviewpoint.exports.anonymize import PseudonymKey, Pseudonyms, anonymize_secret
from reviewpoint.exports.attempt import ExportAttempt, recorded_filters
from reviewpoint.exports.columns import CHOOSABLE, FULL, MINIMAL
from reviewpoint.exports.formats import FORMATS
from reviewpoint.exports.request import ExportRequest
from reviewpoint.exports.schemas import ExportParameters, FullExportParameters, anonymize_mode
from reviewpoint.exports.stream import ExportBody, open_export

USER_AGENT = f"reviewpoint-cli/{__version__}"
# Click's exit code for a usage error: what a bad option value is, whoever checks it.
USAGE_ERROR = 2
# The statuses the HTTP export answers for a request it cannot serve as asked.
_INVALID_STATUSES = (400, 409, 422)
INTERRUPTED = "interrupted on the command line"
READER_GONE = "the reader of standard output went away"


class ExportBrokeOff(Exception):
    """The export failed midway; the message is the command's one line."""


@one_line_errors
def export(
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Every column, as /export-full (default: id,email,name, as /export)."
        ),
    ] = False,
    export_format: Annotated[
        str,
        typer.Option("--format", metavar="FORMAT", help=f"One of {', '.join(FORMATS)}."),
    ] = "csv",
    fields: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES",
            help=f"With --full: comma-separated columns, in order, from {', '.join(CHOOSABLE)}.",
        ),
    ] = None,
    email: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Only the user with this address.")
    ] = None,
    is_active: Annotated[
        str | None,
        typer.Option(metavar="BOOL", help="Only active (true) or inactive (false) users."),
    ] = None,
    is_admin: Annotated[
        str | None,
        typer.Option(metavar="BOOL", help="Only administrators (true) or only others (false)."),
    ] = None,
    created_after: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="Only users created after TIME (ISO 8601 with a zone)."),
    ] = None,
    created_before: Annotated[
        str | None, typer.Option(metavar="TIME", help="Only users created before TIME.")
    ] = None,
    updated_since: Annotated[
        str | None, typer.Option(metavar="TIME", help="Only users updated at or after TIME.")
    ] = None,
    after_id: Annotated[
        str | None,
        typer.Option(metavar="ID", help="Only larger ids: resume after the last one received."),
    ] = None,
    limit: Annotated[
        str | None, typer.Option(metavar="N", help="At most N users, the first in id order.")
    ] = None,
    bom: Annotated[
        bool, typer.Option("--bom", help="CSV only: start with a UTF-8 byte-order mark.")
    ] = False,
    no_excel_safe: Annotated[
        bool,
        typer.Option(
            "--no-excel-safe",
            help="CSV only: no ' before text cells starting with = + - @ (formula guard).",
        ),
    ] = False,
    cursor_token: Annotated[
        str | None,
        typer.Option(
            "--cursor",
            metavar="CURSOR",
            help="With --full: only users created, changed or deleted since the export "
            "that printed CURSOR.",
        ),
    ] = None,
    cursor_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="With --full: read the cursor from FILE (none yet: export everything) "
            "and store the next one there once the export is written.",
        ),
    ] = None,
    anonymize: Annotated[
        str | None,
        typer.Option(
            metavar="true|day",
            help="Pseudonyms instead of emails and names (day: and every timestamp cut to "
            "its day), as anonymize= over HTTP; with the servers' REVIEWPOINT_ANONYMIZE_KEY "
            "the pseudonyms are theirs.",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="FILE, a directory to put the endpoint's file name in, or - for stdout. "
            "Default: users_export.<format> (users_full_export.<format> with --full) here.",
        ),
    ] = None,
) -> None:
    """Export users as the HTTP API does, straight from the database.

    The file appears only once complete; the cursor for the next run goes to stderr.
    """
    if not full:
        for value, option in (
            (fields, "--fields"),
            (cursor_token, "--cursor"),
            (cursor_file, "--cursor-file"),
        ):
            if value is not None:
                raise fail(f"{option} needs --full (as on /export-full)", code=USAGE_ERROR)
    if cursor_token is not None and cursor_file is not None:
        raise fail("give either --cursor or --cursor-file, not both", code=USAGE_ERROR)
    if cursor_file is not None:
        cursor_token = _read_cursor(cursor_file)
    given = {
        "format": export_format,
        "email": email,
        "is_active": is_active,
        "is_admin": is_admin,
        "created_after": created_after,
        "created_before": created_before,
        "updated_since": updated_since,
        "after_id": after_id,
        "limit": limit,
        "fields": fields,
        "anonymize": anonymize,
    }
    settings = current_settings()
    request = _request(
        full,
        given,
        bom=bom,
        excel_safe=not no_excel_safe,
        token=cursor_token,
        pseudonyms=_pseudonyms(settings, anonymize),
    )
    attempt = ExportAttempt(
        endpoint="export-full" if full else "export",
        format=export_format,
        # As the HTTP export records its query: the values as given, by name.
        filters=recorded_filters({**given, "cursor": cursor_token}),
        request_id=uuid.uuid4().hex,
        client_address=None,
        user_agent=USER_AGENT,
        principal=_operator(),
    )
    destination = _destination(output, request)
    # Only a real terminal: rich also takes FORCE_COLOR for one, and a bar in a log is noise.
    shown = sys.stderr.isatty() and err.is_terminal
    try:
        with _service_logs() as audit_problems:
            position = run(_export(settings, request, attempt, destination, shown=shown))
    except ExportBrokeOff as error:
        raise fail(str(error)) from None
    except AppError as error:
        code = USAGE_ERROR if error.status_code in _INVALID_STATUSES else 1
        raise fail(error.detail, code=code) from None
    finally:
        destination.discard()
    token = cursor.encode(position)
    if cursor_file is not None:
        replace_atomically(cursor_file, f"{token}\n".encode())
    for problem in audit_problems:
        err.print(f"warning: {problem}", highlight=False)
    err.print(f"cursor: {token}", highlight=False)


def _read_cursor(path: Path) -> str | None:
    """The cursor a previous run stored; None before the first run (no file yet)."""
    try:
        # A byte that is not UTF-8 becomes U+FFFD, which no cursor holds: refused below.
        token = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    if not token:
        raise fail(
            f"{path} holds no cursor: remove it to start over with a full export",
            code=USAGE_ERROR,
        )
    return token


def _pseudonyms(settings: Settings, anonymize: str | None) -> Pseudonyms | None:
    """The key `--anonymize` uses: the configured one, else (dev/test) a random one.

    Feature flags do not apply here (see the module's docstring).
    """
    try:
        if anonymize is None or anonymize_mode(anonymize) == "false":
            return None
    except ValueError:
        return None  # the parameter schema reports it
    secret = settings.anonymize_key
    if secret is None and settings.env not in ("dev", "test"):
        raise fail(
            "--anonymize needs REVIEWPOINT_ANONYMIZE_KEY (the servers' key, so that "
            "pseudonyms match their exports) unless REVIEWPOINT_ENV is dev or test",
            code=USAGE_ERROR,
        )
    if secret is None:
        err.print(
            "warning: no REVIEWPOINT_ANONYMIZE_KEY: pseudonyms come from a random key "
            "and match no other export",
            highlight=False,
        )
    return Pseudonyms(key=PseudonymKey(anonymize_secret(settings) or ""))


def _request(
    full: bool,
    given: dict[str, str | None],
    *,
    bom: bool,
    excel_safe: bool,
    token: str | None,
    pseudonyms: Pseudonyms | None = None,
) -> ExportRequest:
    """The export asked for, checked by the HTTP endpoint's own schema and rules."""
    since = None
    if token is not None:
        try:
            since = cursor.decode(token)
        except ValueError:
            raise fail(
                f"invalid cursor {token[:40]!r}: pass back the `cursor:` an export printed, "
                "unchanged",
                code=USAGE_ERROR,
            ) from None
    model = FullExportParameters if full else ExportParameters
    values = {name: value for name, value in given.items() if value is not None}
    try:
        parameters = model(**values, bom=bom, excel_safe=excel_safe)
        return parameters.export_request(
            FULL if full else MINIMAL, since=since, pseudonyms=pseudonyms
        )
    except ValidationError as error:
        problems = "; ".join(
            f"--{str(item['loc'][0]).replace('_', '-')}: {item['msg']}" for item in error.errors()
        )
        raise fail(f"invalid input: {problems}", code=USAGE_ERROR) from None
    except AppError as error:
        raise fail(error.detail, code=USAGE_ERROR) from None


def _destination(output: str | None, request: ExportRequest) -> Output:
    if output == "-":
        # A workbook is a zip: on a terminal it would be noise, and can upset it.
        if request.format.media_type.startswith("application/vnd.") and sys.stdout.isatty():
            raise fail(
                f"{request.format.name} is binary: write it to a file (-o FILE) or pipe it",
                code=USAGE_ERROR,
            )
        return StandardOutput()
    target = Path(output or request.filename)
    if target.is_dir():
        target = target / request.filename
    return AtomicFile(target)


def _operator() -> ExportPrincipal:
    """The audit trail's actor: the operating-system user running the command."""
    uid = os.getuid()
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # a uid with no passwd entry, as in some containers
        name = f"uid{uid}"
    return ExportPrincipal(kind="cli", id=uid, label=f"cli:{name}", name=name)


async def _export(
    settings: Settings,
    request: ExportRequest,
    attempt: ExportAttempt,
    destination: Output,
    *,
    shown: bool,
) -> int:
    """Stream the export into `destination` and commit it; the snapshot's change number."""
    database = Database(settings)
    trail = AuditObserver(database)
    attempt.observers = [trail]
    try:
        body = await _open(database, settings, request, attempt)
        try:
            await _copy(body, destination, shown=shown)
        finally:
            await body.aclose()
        return body.position
    finally:
        await trail.close()
        await database.dispose()


async def _open(
    database: Database, settings: Settings, request: ExportRequest, attempt: ExportAttempt
) -> ExportBody:
    try:
        return await open_export(
            database.export_engine,
            request,
            chunk_rows=settings.export_chunk_rows,
            connections=settings.export_connections,
            attempt=attempt,
            # No admission: the caps and budgets are the HTTP callers'.
            admission=AsyncExitStack(),
        )
    except asyncio.CancelledError:
        await attempt.finish("aborted", detail=INTERRUPTED)
        raise
    except BaseException as error:
        await attempt.refused(error)
        # The 503 says "retry"; the operator is better served by what the database said.
        cause = error.__context__
        if isinstance(error, ServiceUnavailable) and isinstance(cause, DBAPIError | OSError):
            raise cause from None
        raise


async def _copy(body: ExportBody, destination: Output, *, shown: bool) -> None:
    attempt = body.attempt
    chunks = aiter(body)
    try:
        with _progress(body.total_rows, shown=shown) as advance:
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except Exception as error:
                    kept = (
                        "the output is incomplete"
                        if isinstance(destination, StandardOutput)
                        else f"{destination.name} was not written"
                    )
                    raise ExportBrokeOff(
                        f"the export failed after {attempt.rows} of {body.total_rows} rows "
                        f"({one_line(error)}); {kept}"
                    ) from None
                with _cut_off_on_failure(body, destination):
                    destination.write(chunk)
                attempt.bytes += len(chunk)
                advance(attempt.rows)
            with _cut_off_on_failure(body, destination):
                destination.commit()
    except asyncio.CancelledError:
        body.cut_off(INTERRUPTED)
        raise


@contextmanager
def _cut_off_on_failure(body: ExportBody, destination: Output) -> Iterator[None]:
    """A failed write ends the export as `aborted` on our side, saying why, in the trail."""
    try:
        yield
    except BrokenPipeError:
        body.cut_off(READER_GONE)
        raise
    except OSError as error:
        body.cut_off(f"writing {destination.name} failed: {error.strerror}")
        raise


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


@contextmanager
def _progress(total: int, *, shown: bool) -> Iterator[Callable[[int], None]]:
    """A bar on stderr, rows against the snapshot's count; nothing when stderr is no terminal."""
    if not shown:
        yield lambda rows: None
        return
    columns = (
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        _RowsPerSecond(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("export", total=total)
        yield lambda rows: progress.update(task, completed=rows)


class _AuditProblems(logging.Handler):
    """Keeps what the audit observer logs as lost records, to tell the operator."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("reviewpoint.audit"):
            self.messages.append(record.getMessage())


@contextmanager
def _service_logs() -> Iterator[list[str]]:
    """Keep the export's server log lines off stderr, collecting lost audit writes.

    The export and audit code log for a server's log (with tracebacks); here
    the command's one line says what went wrong. With a handler on a logger,
    Python no longer prints that logger's records itself.
    """
    handler = _AuditProblems()
    # asyncio's too: a driver whose connection died mid-query can leave a future
    # unread, which asyncio reports ("Future exception was never retrieved").
    loggers = [logging.getLogger("reviewpoint"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
