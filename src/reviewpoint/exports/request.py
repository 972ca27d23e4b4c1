"""What one export call asks for: columns, format, filters, format options, anonymization."""

from __future__ import annotations

from dataclasses import dataclass, field

from reviewpoint.exports.anonymize import Anonymization
from reviewpoint.exports.columns import ExportSpec
from reviewpoint.exports.formats.base import ExportFormat, Options
from reviewpoint.exports.query import Filters


@dataclass(frozen=True)
class ExportRequest:
    spec: ExportSpec
    format: ExportFormat
    filters: Filters = field(default_factory=Filters)
    options: Options = field(default_factory=Options)
    # What else decides this caller's bytes besides rows and parameters (a
    # credential's field limits, an anonymization key's fingerprint): part of
    # the export's ETag (`conditional.py`), so a change to it is never a 304.
    view: str = ""
    # None: real emails and names. Set from `anonymize=`; a caller's limits may force it.
    anonymization: Anonymization | None = None

    @property
    def filename(self) -> str:
        return f"{self.spec.stem}.{self.format.extension}"
