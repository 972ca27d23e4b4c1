"""The audit page: the export audit trail filtered by actor, outcome and time,
paged, over a chart of exports per day. The audit service of
`GET /api/v1/exports/audit` does the reading (its filters, its paging, its
per-day totals); this module turns the form into its arguments and back.

The filters are a GET form, so a filtered view is a URL to bookmark; htmx
swaps only the results in place, and without script the form simply reloads
the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from reviewpoint.audit import service
from reviewpoint.audit.schemas import ACTOR_FORMAT, OUTCOMES, ActorRef, parse_instant
from reviewpoint.auth.deps import require_feature
from reviewpoint.console import audit_chart
from reviewpoint.console.deps import SignedInAdmin, page
from reviewpoint.db import Session, utcnow
from reviewpoint.inputs import INT32_MAX

AUDIT_PATH = "/console/audit"
PAGE_SIZE = 50
# With no "from", the page shows this many days up to "to" (or today).
DEFAULT_DAYS = 30
FILTERS = ("actor", "outcome", "from", "to")
WHEN_FORMAT = "a day (2026-11-26) or an ISO 8601 time with a zone (2026-11-26T09:30:00Z)"

router = APIRouter(
    prefix=AUDIT_PATH,
    include_in_schema=False,
    dependencies=[Depends(require_feature("console"))],
)


class FilterError(ValueError):
    """A filter the page cannot use; its text is shown in place of the results."""


@dataclass(frozen=True)
class AuditFilters:
    """The form's values as the audit service takes them."""

    actor: str | None
    outcome: str | None
    since: datetime
    until: datetime | None  # exclusive; None: up to now
    offset: int
    # The chart's days, both included (UTC).
    first_day: date
    last_day: date
    # What the form shows back, blanks included.
    form: dict[str, str]

    @classmethod
    def from_query(cls, values: Mapping[str, str], *, today: date) -> AuditFilters:
        form = {name: values.get(name, "").strip() for name in FILTERS}
        actor = form["actor"] or None
        if actor is not None:
            try:
                ActorRef.parse(actor)
            except ValueError as error:
                raise FilterError(f"Actor: {error}") from None
        outcome = form["outcome"] or None
        if outcome is not None and outcome not in OUTCOMES:
            raise FilterError(f"Outcome: must be one of {', '.join(OUTCOMES)}")
        until = _when("To", form["to"], day_end=True) if form["to"] else None
        last_day = (until - timedelta(microseconds=1)).date() if until else today
        if form["from"]:
            since = _when("From", form["from"], day_end=False)
        else:
            since = _day_start(last_day - timedelta(days=DEFAULT_DAYS - 1))
        if until is not None and since >= until:
            raise FilterError("From: must be before To")
        first_day = since.date()
        return cls(
            actor=actor,
            outcome=outcome,
            since=since,
            until=until,
            offset=_offset(values.get("offset", "")),
            first_day=first_day,
            last_day=max(last_day, first_day),
            form=form,
        )

    def url(self, *, offset: int) -> str:
        """This view's address at another page (blank filters left out)."""
        query = {name: value for name, value in self.form.items() if value}
        if offset:
            query["offset"] = str(offset)
        return f"{AUDIT_PATH}?{urlencode(query)}" if query else AUDIT_PATH


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _when(label: str, text: str, *, day_end: bool) -> datetime:
    """A bound of the time range: a UTC day (a "to" day counts whole) or an instant."""
    try:
        if len(text) == 10:  # YYYY-MM-DD; fromisoformat alone would also take weeks
            day = date.fromisoformat(text)
            return _day_start(day) + timedelta(days=1) if day_end else _day_start(day)
        moment = parse_instant(text)
    except OverflowError:
        raise FilterError(f"{label}: out of range") from None
    except ValueError:
        raise FilterError(f"{label}: must be {WHEN_FORMAT}") from None
    assert isinstance(moment, datetime)
    return moment


def _offset(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    if not (text.isascii() and text.isdecimal()) or int(text) > INT32_MAX:
        raise FilterError("Page: the offset must be a whole number of records, 0 or more")
    return int(text)


@router.get("")
async def audit_page(request: Request, session: Session, signed_in: SignedInAdmin) -> HTMLResponse:
    # htmx asks for the results alone; its history restore (a cache miss) needs the page.
    fragment = (
        request.headers.get("hx-request") == "true"
        and request.headers.get("hx-history-restore-request") != "true"
    )
    context: dict[str, object] = {
        "active": "audit",
        "outcomes": OUTCOMES,
        "actor_format": ACTOR_FORMAT,
        "when_format": WHEN_FORMAT,
        "default_days": DEFAULT_DAYS,
    }
    try:
        filters = AuditFilters.from_query(request.query_params, today=utcnow().date())
    except FilterError as error:
        context |= {"error": str(error), "form": _form_of(request.query_params)}
        # htmx 2 swaps only 2xx answers: the fragment says the error with a 200.
        status_code = 200 if fragment else 422
        template = "audit_results.html" if fragment else "audit.html"
        return page(request, template, context, status_code=status_code, signed_in=signed_in)

    records, count = await service.list_page(
        session,
        actor=filters.actor,
        outcome=filters.outcome,
        since=filters.since,
        until=filters.until,
        offset=filters.offset,
        limit=PAGE_SIZE,
    )
    span = (filters.last_day - filters.first_day).days + 1
    chart = None
    if span <= audit_chart.MAX_DAYS:
        totals = await service.daily_totals(
            session,
            actor=filters.actor,
            outcome=filters.outcome,
            since=filters.since,
            until=filters.until,
        )
        chart = audit_chart.build(totals, first_day=filters.first_day, last_day=filters.last_day)
    context |= {
        "form": filters.form,
        "filters": filters,
        "records": records,
        "count": count,
        "first": filters.offset + 1,
        "last": filters.offset + len(records),
        "newer_url": filters.url(offset=max(filters.offset - PAGE_SIZE, 0))
        if filters.offset
        else None,
        "older_url": filters.url(offset=filters.offset + PAGE_SIZE)
        if filters.offset + PAGE_SIZE < count
        else None,
        "chart": chart,
        "max_chart_days": audit_chart.MAX_DAYS,
    }
    template = "audit_results.html" if fragment else "audit.html"
    return page(request, template, context, signed_in=signed_in)


def _form_of(values: Mapping[str, str]) -> dict[str, str]:
    return {name: values.get(name, "") for name in FILTERS}
