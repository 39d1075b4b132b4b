"""One access line per request, and the process's log format (text or JSON).

The line goes to the ``conduit.access`` logger at INFO, so its cost with INFO off is one
level check. Its fields ride on the record (``record.access``): the JSON formatter puts
them at the top level of the line's object, the text form lists them as key=value. It
names the key by id and visible prefix, never the key; the path is logged without its
query string (where browsers put ?token=). Every line the process writes through the
handler configured here is also scrubbed (core/scrub.py), as a last net for what a
library might log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from conduit_tornado.core.scrub import scrub
from conduit_tornado.core.settings import Settings

access = logging.getLogger("conduit.access")
#: Fields of the request-log entry copied to the access line, as named there.
ENTRY_FIELDS = (
    "key_id",
    "model",
    "provider",
    "deployment",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "overhead_ms",
    "attempts",
    "error_code",
    "stream",
)
#: The standard LogRecord attributes: anything else on a record came as ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def enabled(settings: Settings) -> bool:
    return settings.access_log and access.isEnabledFor(logging.INFO)


def log_request(
    *,
    method: str,
    route: str,
    path: str,
    status: int,
    latency_ms: float,
    request_id: str,
    key_id: str | None,
    key_prefix: str | None,
    entry: Mapping[str, Any] | None,
    trace_id: str | None,
) -> None:
    """Write the access line of a finished request (callers check ``enabled`` first)."""
    fields: dict[str, Any] = {
        "request_id": request_id,
        "trace_id": trace_id,
        "method": method,
        "route": route,
        "path": scrub(path),
        "status": status,
        "latency_ms": round(latency_ms, 3),
        "key_id": key_id,
        "key_prefix": key_prefix,
    }
    if entry is not None:
        for name in ENTRY_FIELDS:
            value = entry.get(name)
            if value is not None:
                fields[name] = value
        if entry.get("status") is not None:
            fields["status"] = entry["status"]  # 499: the client left mid-stream
    access.info(
        "%s %s %d %.1fms",
        method,
        fields["path"],
        fields["status"],
        latency_ms,
        extra={"access": fields},
    )


class TextFormatter(logging.Formatter):
    """The usual text line; an access line with its fields as key=value after it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            shown = " ".join(
                f"{k}={v}" for k, v in fields.items() if v is not None and k not in ("path",)
            )
            line = f"{line} {shown}"
        return scrub(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then any extra fields
    (an access line's at the top level), and the traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for name, value in record.__dict__.items():
            if name in _STANDARD or name.startswith("_"):
                continue
            if name == "access" and isinstance(value, dict):
                out.update(value)
            else:
                out[name] = value
        if record.exc_info:
            out["exc_info"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc_info"] = scrub(record.exc_text)
        if record.stack_info:
            out["stack_info"] = scrub(self.formatStack(record.stack_info))
        return orjson.dumps(out, default=str).decode()


def configure_logging(settings: Settings) -> None:
    """The ``serve`` command's logging: level and format from the settings, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
