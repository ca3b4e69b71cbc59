"""Progress events the pipelines emit, for a CLI display or a user's callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Stage(Enum):
    PLANNED = "planned"
    """Backup: sent for every collection before the first one starts, with the
    server's estimate of its documents as ``total_documents`` (None if unknown)."""
    STARTED = "started"
    BATCH = "batch"
    DONE = "done"
    FAILED = "failed"
    """Restore and heal: this collection could not be restored (its outcome says why)."""
    SKIPPED = "skipped"
    """Restore and heal: the name reappeared meanwhile; the staged copy was dropped."""


@dataclass(frozen=True)
class Progress:
    """One step of one collection; counters are totals so far for it.

    ``total_documents`` and ``total_bytes`` are what the collection will hold
    when known in advance (a restore from an archive with a manifest), else None.
    A backup gives ``total_documents`` as the server's estimate at the start
    (collStats, what estimatedDocumentCount returns): the count read may end
    above or below it if the collection changes meanwhile.
    """

    stage: Stage
    database: str
    collection: str
    documents: int = 0
    bytes: int = 0
    total_documents: int | None = None
    total_bytes: int | None = None


ProgressCallback = Callable[[Progress], None]


def ignore(_: Progress) -> None:
    """The default callback."""
