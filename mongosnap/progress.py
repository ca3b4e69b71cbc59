"""Progress events the pipelines emit, for a CLI display or a user's callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Stage(Enum):
    STARTED = "started"
    BATCH = "batch"
    DONE = "done"


@dataclass(frozen=True)
class Progress:
    """One step of one collection; counters are totals so far for it."""

    stage: Stage
    database: str
    collection: str
    documents: int = 0
    bytes: int = 0


ProgressCallback = Callable[[Progress], None]


def ignore(_: Progress) -> None:
    """The default callback."""
