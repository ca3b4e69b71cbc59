"""Sizes and durations for people: B, KB, MB, GB (decimal, as in MB/s rates)."""

from __future__ import annotations

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


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: the two largest units."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
