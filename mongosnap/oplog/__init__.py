"""Point in time: oplog capture, continuous oplog archiving, and replay onto a database."""

from __future__ import annotations

from .diff import apply_diff, apply_update
from .entry import OplogEntry, format_ts, parse_entry, parse_ts
from .replay import replay
from .report import ReplayReport

__all__ = [
    "OplogEntry",
    "ReplayReport",
    "apply_diff",
    "apply_update",
    "format_ts",
    "parse_entry",
    "parse_ts",
    "replay",
]
