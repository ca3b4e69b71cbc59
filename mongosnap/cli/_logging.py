"""Logging for the command line: levels from -q/-v/-vv, text or JSON lines, on stderr.

    -q      errors only
    (none)  warnings and errors
    -v      + steps: per collection, per archive, per heal cycle
    -vv     + detail: progress batches, S3 parts, S3 retries

botocore logs the wire (Authorization header included) at DEBUG: its loggers
stay at WARNING whatever the verbosity, except its retry loggers, whose
messages carry only delays and reasons; of those, only the decisions to
retry (and giving up) pass: "Not retrying request." follows every successful
request and would drown -vv.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from ..units import iso_utc

# Third-party loggers held at WARNING; their DEBUG output may carry secrets.
QUIET_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3", "pymongo")
# Allowed through at -vv: "Retry needed, retrying request after delay of ...".
RETRY_LOGGERS = ("botocore.retries", "botocore.retryhandler")
# What of the retry loggers' output is worth a line: a retry, or giving up.
RETRY_NEWS = ("Retry needed", "Max attempts", "Reached the maximum")
# A long-running command's clean stop (SIGTERM): an info line shown without -v.
STOP_LOGGER = "mongosnap.stop"


def rfc3339(when: datetime) -> str:
    """``2026-12-01T16:40:00.123Z``: units.iso_utc's format, the one of --json."""
    return iso_utc(when) or ""


class TextFormatter(logging.Formatter):
    """``mongosnap: warning: message``, with a leading timestamp when asked."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        line = f"mongosnap: {record.levelname.lower()}: {record.getMessage()}"
        if self.timestamps:
            line = f"{rfc3339(datetime.fromtimestamp(record.created, UTC))} {line}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": rfc3339(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(entry, ensure_ascii=False)


class _NoWireDebug(logging.Filter):
    """Drops below-WARNING records of the quiet loggers, even if someone lowers their level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if record.name.startswith(RETRY_LOGGERS):
            return str(record.msg).startswith(RETRY_NEWS)
        return record.name.split(".")[0] not in QUIET_LOGGERS


def level_for(verbose: int, quiet: bool) -> int:
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def configure(
    *,
    verbose: int = 0,
    quiet: bool = False,
    fmt: str = "text",
    timestamps: bool = False,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route mongosnap's logs to stderr as asked; returns the handler installed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(timestamps))
    handler.addFilter(_NoWireDebug())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = level_for(verbose, quiet)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger(STOP_LOGGER).setLevel(level if quiet else min(level, logging.INFO))
    for name in RETRY_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)
    return handler
