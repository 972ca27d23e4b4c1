"""Every metric the service keeps, one set per app, and their exposition.

Names start with `reviewpoint_`. No label names a user, an email or a key:
labels are route templates, methods, statuses, endpoints, formats, outcomes
and limit kinds, each from a short fixed list, so neither a caller nor a
scanner can add label values.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from reviewpoint.admission.gate import RefusalKind, RefusedAction
from reviewpoint.metrics.multiprocess import DIRECTORY_VARIABLE, forget_dead_workers

# prometheus_client chooses between in-memory and file-backed values once, when
# first imported (just above): read the variable at the same moment so that
# exposition reads the values where they are written.
MULTIPROCESS_DIRECTORY = os.environ.get(DIRECTORY_VARIABLE)
# `*_created` series (a counter's creation time) do not exist in multiprocess
# mode: leave them out in one process too, so both modes expose the same series.
disable_created_metrics()

# The text format every Prometheus server reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Exports run up to REVIEWPOINT_EXPORT_MAX_SECONDS (an hour by default).
EXPORT_SECONDS_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Most requests take milliseconds; an export's request lasts as long as its body.
REQUEST_SECONDS_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    *(30, 60, 300, 900, 3600),
)
_REFUSALS: tuple[tuple[RefusalKind, RefusedAction], ...] = (
    ("rate", "export"),
    ("concurrency", "export"),
    ("rate", "login"),
    ("concurrency", "login"),
)


class Metrics:
    """The metrics of one app (tests build many apps in one process: each counts alone)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.exports = Counter(
            "reviewpoint_exports",
            "Export calls by endpoint, format and outcome (completed, failed, aborted, "
            "denied, limited, invalid, not_modified)",
            ["endpoint", "format", "outcome"],
            registry=registry,
        )
        self.export_rows = Counter(
            "reviewpoint_export_rows",
            "Rows sent by exports, counted when each export ends",
            ["endpoint", "format"],
            registry=registry,
        )
        self.export_bytes = Counter(
            "reviewpoint_export_bytes",
            "Bytes of the export files sent (before any gzip), counted when each export ends",
            ["endpoint", "format"],
            registry=registry,
        )
        self.export_seconds = Histogram(
            "reviewpoint_export_duration_seconds",
            "Seconds from request to last byte of exports that started streaming, by outcome",
            ["endpoint", "format", "outcome"],
            buckets=EXPORT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.exports_in_progress = Gauge(
            "reviewpoint_exports_in_progress",
            "Exports streaming right now, in all workers",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.refusals = Counter(
            "reviewpoint_rejections",
            "Requests refused with 429, by kind (rate budget or concurrency cap) and action",
            ["kind", "action"],
            registry=registry,
        )
        self.audit_write_failures = Counter(
            "reviewpoint_audit_write_failures",
            "Export audit records that could not be written",
            registry=registry,
        )
        self.http_requests = Counter(
            "reviewpoint_http_requests",
            "HTTP requests by route template, method and the status sent",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "reviewpoint_http_request_duration_seconds",
            "Seconds from request to the end of the response body, by route template and method",
            ["route", "method"],
            buckets=REQUEST_SECONDS_BUCKETS,
            registry=registry,
        )
        # Zero from the start, so that alerts on these see a series before the first event.
        for kind, action in _REFUSALS:
            self.refusals.labels(kind=kind, action=action)

    def rejected(self, kind: RefusalKind, action: RefusedAction) -> None:
        """The admission gate refused a request (its `on_refusal`)."""
        self.refusals.labels(kind=kind, action=action).inc()

    def audit_write_failed(self) -> None:
        """The audit trail could not record an export attempt."""
        self.audit_write_failures.inc()

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's values, or every worker's."""
        if MULTIPROCESS_DIRECTORY is None:
            return generate_latest(self.registry)
        forget_dead_workers(MULTIPROCESS_DIRECTORY)
        # A fresh registry per scrape, as prometheus_client prescribes: the
        # collector reads the files, never the metric objects of this process.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=MULTIPROCESS_DIRECTORY)
        return generate_latest(registry)
