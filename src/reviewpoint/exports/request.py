"""What one export call asks for: columns, format, filters and format options."""

from __future__ import annotations

from dataclasses import dataclass, field

from reviewpoint.exports.columns import ExportSpec
from reviewpoint.exports.formats.base import ExportFormat, Options
from reviewpoint.exports.query import Filters


@dataclass(frozen=True)
class ExportRequest:
    spec: ExportSpec
    format: ExportFormat
    filters: Filters = field(default_factory=Filters)
    options: Options = field(default_factory=Options)

    @property
    def filename(self) -> str:
        return f"{self.spec.stem}.{self.format.extension}"
