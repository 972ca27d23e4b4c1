"""Export metrics, fed by the export attempt seam (exports/attempt.py).

An export's outcome is its attempt's: one that breaks off mid-stream counts as
`failed` or `aborted` here, although its HTTP status (counted by the request
metrics) was the 200 sent before the first byte.
"""

from __future__ import annotations

from reviewpoint.exports.attempt import ExportAttempt
from reviewpoint.metrics.registry import Metrics

# Formats a label may name: csv, and those exports/formats/ adds (keep in step).
# Anything else a caller typed into `format=` (refused with 400) counts as
# "other", so callers cannot add label values.
FORMAT_LABELS = frozenset({"csv", "json", "ndjson", "xlsx"})


def format_label(requested: str | None) -> str:
    value = (requested or "").lower()
    return value if value in FORMAT_LABELS else "other"


class ExportMetrics:
    """An `ExportObserver`: counts every export call and the exports streaming now."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def started(self, attempt: ExportAttempt) -> None:
        self.metrics.exports_in_progress.inc()

    async def finished(self, attempt: ExportAttempt) -> None:
        metrics = self.metrics
        endpoint, format = attempt.endpoint, format_label(attempt.format)
        metrics.exports.labels(endpoint=endpoint, format=format, outcome=attempt.outcome).inc()
        if not attempt.streaming:
            return  # refused before its response: no rows, no bytes, never in progress
        metrics.exports_in_progress.dec()
        metrics.export_rows.labels(endpoint=endpoint, format=format).inc(attempt.rows)
        metrics.export_bytes.labels(endpoint=endpoint, format=format).inc(attempt.bytes)
        if attempt.duration_seconds is not None:
            metrics.export_seconds.labels(
                endpoint=endpoint, format=format, outcome=attempt.outcome
            ).observe(attempt.duration_seconds)
