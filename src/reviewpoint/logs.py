"""How log lines look and where they go: text for a terminal, JSON lines for collectors.

Every line names the request it was written for (`request_id`, from
request_id.py; "-" in text and null in JSON outside a request), uvicorn's
access lines included: uvicorn writes an access line when the response starts,
inside the request's task, where the request id is still set.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

from reviewpoint.request_id import NO_REQUEST, RequestIdFilter

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# What every LogRecord has; anything else on a record came from `extra=` and is
# a field of its JSON line (the audit record's `audit_id`, for example).
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's copy of a message with terminal colours
}
# The arguments of uvicorn's access line, '%s - "%s %s HTTP/%s" %d', as fields.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (ISO 8601, UTC, `Z`), level, logger,
    message, request_id, extra fields, and the traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", NO_REQUEST)
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None if request_id == NO_REQUEST else request_id,
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            line.update(zip(_ACCESS_FIELDS, args, strict=True))
        line.update(
            (name, value) for name, value in vars(record).items() if name not in _RECORD_ATTRIBUTES
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """The app's own loggers (`reviewpoint.*`), on stderr."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger("reviewpoint")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def uvicorn_log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's `log_config` for `serve` and `demo`: its loggers in our format.

    As uvicorn's default: access lines on stdout, the rest on stderr. A dict,
    so uvicorn can hand it to the worker processes it spawns.
    """
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "reviewpoint",
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "reviewpoint.request_id.RequestIdFilter"}},
        "formatters": {
            "reviewpoint": {"()": "reviewpoint.logs.formatter", "log_format": log_format}
        },
        "handlers": {
            "stderr": {**handler, "stream": "ext://sys.stderr"},
            "stdout": {**handler, "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["stdout"], "level": level.upper(), "propagate": False},
        },
    }
