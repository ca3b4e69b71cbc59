"""Live progress on a terminal: one row per collection, and one for them all.

Documents, size, rate; with known totals (a restore from an archive with a
manifest, a backup's estimates from the server) also the percentage done and
the time left. The overall row totals every collection a backup announced
(PLANNED), or those seen so far.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import units
from .progress import Progress, ProgressCallback, Stage, ignore

if TYPE_CHECKING:
    from rich.table import Table

# rich is imported only when a table is drawn: a run with -q, --json or its
# output piped never draws one, and the import costs ~35 ms of CPU.

REFRESH_PER_SECOND = 4


@dataclass
class _Row:
    documents: int = 0
    bytes: int = 0
    total_bytes: int | None = None
    total_documents: int | None = None
    stage: Stage = Stage.STARTED
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def elapsed(self, now: float | None = None) -> float:
        return (self.finished or now or time.monotonic()) - self.started

    def fraction(self) -> float | None:
        """How much is done, by bytes (or documents) of the known total."""
        if self.total_bytes:
            return min(self.bytes / self.total_bytes, 1.0)
        if self.total_documents:
            return min(self.documents / self.total_documents, 1.0)
        if self.total_bytes == 0 or self.total_documents == 0:
            return 1.0 if self.finished else 0.0
        return None

    def percent(self) -> str:
        fraction = self.fraction()
        return "" if fraction is None else f"{fraction:.0%}"

    def eta(self, now: float | None = None) -> str:
        fraction = self.fraction()
        if self.finished or not fraction:
            return ""
        return units.duration(self.elapsed(now) * (1 - fraction) / fraction)

    def status(self) -> str:
        return "…" if self.stage in (Stage.STARTED, Stage.BATCH) else self.stage.value


class _Table:
    """Collects progress events; renders them as a rich table."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.planned: dict[str, int | None] = {}  # a backup's estimates, by namespace
        self.started = time.monotonic()

    def update(self, event: Progress) -> None:
        key = f"{event.database}.{event.collection}"
        if event.stage is Stage.PLANNED:
            self.planned[key] = event.total_documents
            return
        row = self.rows.setdefault(key, _Row())
        row.documents, row.bytes, row.stage = event.documents, event.bytes, event.stage
        row.total_documents, row.total_bytes = event.total_documents, event.total_bytes
        if event.stage in (Stage.DONE, Stage.FAILED, Stage.SKIPPED):
            row.finished = time.monotonic()

    def overall(self) -> _Row:
        """All collections as one row: done so far of the (estimated) total."""
        names = list(dict.fromkeys([*self.planned, *self.rows]))
        rows = [self.rows.get(name, _Row(total_documents=self.planned.get(name))) for name in names]
        total = 0
        for row in rows:  # a finished collection counts for what it held
            expected = row.documents if row.finished else row.total_documents
            if expected is None:
                total = -1
                break
            total += max(expected, row.documents)
        every = bool(rows) and all(row.finished for row in rows)
        return _Row(
            documents=sum(row.documents for row in rows),
            bytes=sum(row.bytes for row in rows),
            total_documents=None if total < 0 else total,
            stage=Stage.DONE if every else Stage.BATCH,
            started=self.started,
            finished=max(row.finished or 0.0 for row in rows) if every else None,
        )

    def cells(self, name: str, row: _Row) -> list[str]:
        return [
            name,
            f"{row.documents:,}",
            units.size(row.bytes),
            units.rate(row.bytes, row.elapsed()),
            row.percent(),
            row.eta(),
            row.status(),
        ]

    def __rich__(self) -> Table:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for title in ("collection", "documents", "size", "rate", "%", "ETA", ""):
            table.add_column(title, justify="left" if title in ("collection", "") else "right")
        for name, row in self.rows.items():
            table.add_row(*self.cells(name, row))
        count = len(set(self.planned) | set(self.rows))
        if count > 1:
            table.add_section()
            table.add_row(*self.cells(f"all {count} collections", self.overall()))
        return table


@contextlib.contextmanager
def progress_display(*, enabled: bool) -> Iterator[ProgressCallback]:
    """Yield a progress callback; draws live on stderr when enabled."""
    if not enabled:
        yield ignore
        return
    from rich.console import Console
    from rich.live import Live

    table = _Table()
    console = Console(file=sys.stderr)
    with Live(table, console=console, refresh_per_second=REFRESH_PER_SECOND, transient=False):
        yield table.update
