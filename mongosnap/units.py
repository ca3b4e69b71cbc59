"""Sizes and durations for people: B, KB, MB, GB (decimal, as in MB/s rates);
times for machines (ISO 8601 in UTC)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

_UNITS = ("B", "KB", "MB", "GB", "TB")


def size(n: float) -> str:
    """``0 B``, ``512 B``, ``1.5 KB``, ``23.4 MB``, ``1.2 GB``: one decimal above bytes."""
    value = float(n)
    for unit in _UNITS[:-1]:
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} {_UNITS[-1]}"


def rate(n: float, seconds: float) -> str:
    """Bytes per second in the unit ``size`` picks: ``12.3 MB/s``."""
    return f"{size(n / seconds if seconds > 0 else 0)}/s"


def duration(span: float | timedelta | None) -> str:
    """``0s``, ``59s``, ``3m05s``, ``2h07m``, ``3d04h``: the two largest units.

    Every unit is truncated, never rounded up: 59.9 s is ``59s`` as 2h07m59s is
    ``2h07m``, so an age never reads past a limit it has not reached. Seconds
    (a float) or a timedelta; a negative span is ``0s``; ``-`` when unknown
    (None, or not a finite number).
    """
    if span is None:
        return "-"
    seconds = span.total_seconds() if isinstance(span, timedelta) else float(span)
    if not math.isfinite(seconds):
        return "-"
    whole = max(0, math.floor(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def iso_utc(when: datetime | None) -> str | None:
    """``2026-12-07T04:05:06.123Z``: RFC 3339 in UTC, always to the millisecond
    (as ``--json`` and the log lines print times); None stays None."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def count(n: int) -> str:
    """``1,234,567``: every count a person reads has thousands separators."""
    return f"{n:,}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 index``, ``2 indexes``, ``1,000 documents``: a count and its noun."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
