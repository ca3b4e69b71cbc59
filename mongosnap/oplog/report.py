"""What a replay did: counts by kind and by reason, where it stopped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bson.timestamp import Timestamp

from .entry import format_ts


@dataclass
class ReplayReport:
    """What a replay did.

    ``applied`` counts entries by kind: ``i``, ``u``, ``d`` and command names,
    plus ``applyOps`` and ``transaction`` (commits); ``skipped`` counts those
    left alone by reason. ``namespaces`` are where writes landed (after the
    database renaming). ``stop`` is ``end``, ``until`` or ``loss``; ``lost``
    maps each namespace (``db.*`` for a database) whose loss was held back to
    the timestamp of that entry. ``stopped`` maps each namespace whose replay
    stopped on an entry it cannot apply (the others went on) to the cause,
    which names that entry.
    """

    applied: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    namespaces: set[str] = field(default_factory=set)
    entries: int = 0
    last_ts: Timestamp | None = None
    stop: str = "end"
    lost: dict[str, Timestamp] = field(default_factory=dict)
    pending_transactions: int = 0
    stopped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": dict(sorted(self.applied.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "namespaces": sorted(self.namespaces),
            "entries": self.entries,
            "last_ts": format_ts(self.last_ts) if self.last_ts else None,
            "stop": self.stop,
            "lost": {ns: format_ts(ts) for ns, ts in sorted(self.lost.items())},
            "pending_transactions": self.pending_transactions,
            "stopped": dict(sorted(self.stopped.items())),
        }
