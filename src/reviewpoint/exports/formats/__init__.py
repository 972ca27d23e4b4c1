"""Every export format, in the one table the router reads.

Adding a format is a module here and a line in `FORMATS`; the rows, the
snapshot, admission and streaming are the same for all of them.
"""

from __future__ import annotations

from reviewpoint.errors import BadRequest
from reviewpoint.exports.formats.base import ExportFormat, Options
from reviewpoint.exports.formats.csv import CSV
from reviewpoint.exports.formats.json import JSON
from reviewpoint.exports.formats.ndjson import NDJSON
from reviewpoint.exports.formats.xlsx import XLSX

FORMATS: dict[str, ExportFormat] = {
    export_format.name: export_format for export_format in (CSV, NDJSON, JSON, XLSX)
}
DEFAULT_OPTIONS = Options()
_ECHOED = 32  # characters of an unknown format's name repeated in the 400


def format_named(name: str) -> ExportFormat:
    """The format a `format=` value names (case-insensitive), or a 400 listing them."""
    found = FORMATS.get(name.lower())
    if found is None:
        supported = ", ".join(f"'{known}'" for known in FORMATS)
        # Echoed only in part: a detail stays short enough for the audit trail's column.
        shown = name if len(name) <= _ECHOED else f"{name[:_ECHOED]}..."
        raise BadRequest(f"Unsupported format {shown!r}. Supported: {supported}.")
    return found


def check_options(export_format: ExportFormat, options: Options) -> None:
    """A 400 for an option changed from its default on a format that has no use for it.

    Refused rather than ignored: a caller asking for a BOM on JSON expects something
    that will not happen.
    """
    for option in ("bom", "excel_safe"):
        changed = getattr(options, option) != getattr(DEFAULT_OPTIONS, option)
        if changed and option not in export_format.options:
            value = str(getattr(options, option)).lower()
            takers = ", ".join(
                f"'{known.name}'" for known in FORMATS.values() if option in known.options
            )
            raise BadRequest(
                f"'{option}={value}' applies to format {takers} only, "
                f"not to '{export_format.name}'."
            )
