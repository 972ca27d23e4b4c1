"""What the audit API and CLI accept and show."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from reviewpoint.audit.models import ExportAudit
from reviewpoint.exports.attempt import Outcome
from reviewpoint.inputs import INT32_MAX, POSITIVE_INT32_PATTERN

OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
# `cli`: `reviewpoint export`, run by the operating-system user whose uid is the id.
ActorKind = Literal["user", "api_key", "cli"]
ACTOR_KINDS: tuple[ActorKind, ...] = get_args(ActorKind)
ACTOR_FORMAT = "user:ID, api_key:ID or cli:UID"
# What ActorRef.parse takes (a uid may be 0), for the OpenAPI schema.
ACTOR_PATTERN = f"^((user|api_key):{POSITIVE_INT32_PATTERN}|cli:(0+|{POSITIVE_INT32_PATTERN}))$"
INSTANT_FORMAT = "an ISO 8601 time with a zone, e.g. 2026-11-26T09:30:00Z"


@dataclass(frozen=True)
class ActorRef:
    """`user:ID`, `api_key:ID` or `cli:UID`: who a filter asks for, spelled as
    `ExportPrincipal.key`."""

    kind: ActorKind
    id: int

    @classmethod
    def parse(cls, value: str) -> ActorRef:
        kind, _, number = value.partition(":")
        # isdecimal() and the bound: the id goes to a 32-bit integer column.
        # Row ids start at 1; a uid may be 0 (root).
        lowest = 0 if kind == "cli" else 1
        if (
            kind not in ACTOR_KINDS
            or not (number.isascii() and number.isdecimal())
            or not lowest <= int(number) <= INT32_MAX
        ):
            raise ValueError(f"must be {ACTOR_FORMAT}")
        return cls(kind=kind, id=int(number))


def parse_instant(value: object) -> object:
    """An ISO 8601 string with a zone, as a UTC-comparable datetime.

    Stricter than pydantic's datetime, which also takes Unix timestamps and
    zone-less times: a time without a zone means a different moment on every
    operator's machine.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"must be {INSTANT_FORMAT}") from None
    else:
        raise ValueError(f"must be {INSTANT_FORMAT}")
    if moment.tzinfo is None:
        raise ValueError(f"must be {INSTANT_FORMAT} (no zone given)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"must be {INSTANT_FORMAT} (out of range)") from None


def _check_actor(value: str | None) -> str | None:
    if value is not None:
        ActorRef.parse(value)
    return value


ActorText = Annotated[str | None, AfterValidator(_check_actor)]
Instant = Annotated[datetime | None, BeforeValidator(parse_instant)]


class AuditActor(BaseModel):
    kind: ActorKind
    id: int
    # The user's email or the key's name, as they were at the time of the export.
    name: str | None
    key_prefix: str | None


class ExportAuditPublic(BaseModel):
    id: int
    request_id: str
    endpoint: str
    format: str | None
    filters: dict[str, str]
    actor: AuditActor | None = Field(description="Null when no credential was recognised")
    outcome: Outcome
    status: int | None
    detail: str | None
    rows: int
    bytes: int
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    client_address: str | None
    user_agent: str | None
    fields: list[str] | None = Field(
        description="The columns the export delivered (after the key's limits); null "
        "when it was refused before they were known"
    )
    anonymized: Literal["false", "true", "day"] | None = Field(
        description="The `anonymize` mode it ran with (an anonymized-only key's "
        "default is `true`); null when refused before it was known"
    )

    @classmethod
    def of(cls, record: ExportAudit) -> ExportAuditPublic:
        actor = None
        if record.actor_kind is not None and record.actor_id is not None:
            actor = AuditActor(
                kind=record.actor_kind,
                id=record.actor_id,
                name=record.actor_name,
                key_prefix=record.key_prefix,
            )
        return cls(
            id=record.id,
            request_id=record.request_id,
            endpoint=record.endpoint,
            format=record.format,
            filters=json.loads(record.filters) if record.filters else {},
            actor=actor,
            outcome=record.outcome,
            status=record.status,
            detail=record.detail,
            rows=record.rows,
            bytes=record.bytes,
            started_at=record.started_at,
            finished_at=record.finished_at,
            duration_seconds=record.duration_seconds,
            client_address=record.client_address,
            user_agent=record.user_agent,
            fields=record.fields.split(",") if record.fields else None,
            anonymized=record.anonymized,
        )


class ExportAuditsPublic(BaseModel):
    data: list[ExportAuditPublic]
    count: int = Field(description="Records matching the filters, over all pages")
