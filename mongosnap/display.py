"""Live progress on a terminal: one row per collection with documents, bytes, rate."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .progress import Progress, ProgressCallback, Stage, ignore

REFRESH_PER_SECOND = 4


@dataclass
class _Row:
    documents: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def rate(self) -> float:
        elapsed = (self.finished or time.monotonic()) - self.started
        return self.bytes / elapsed / 1e6 if elapsed > 0 else 0.0


class _Table:
    """Collects progress events; renders them as a rich table."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}

    def update(self, event: Progress) -> None:
        key = f"{event.database}.{event.collection}"
        row = self.rows.setdefault(key, _Row())
        row.documents, row.bytes = event.documents, event.bytes
        if event.stage is Stage.DONE:
            row.finished = time.monotonic()

    def __rich__(self) -> Table:
        table = Table(box=None, pad_edge=False)
        for title in ("collection", "documents", "MB", "MB/s", ""):
            table.add_column(title, justify="left" if not title else "right")
        for name, row in self.rows.items():
            table.add_row(
                name,
                f"{row.documents:,}",
                f"{row.bytes / 1e6:,.1f}",
                f"{row.rate():,.1f}",
                "done" if row.finished else "…",
            )
        return table


@contextlib.contextmanager
def progress_display(*, enabled: bool) -> Iterator[ProgressCallback]:
    """Yield a progress callback; draws live on stderr when enabled."""
    if not enabled:
        yield ignore
        return
    table = _Table()
    console = Console(file=sys.stderr)
    with Live(table, console=console, refresh_per_second=REFRESH_PER_SECOND, transient=False):
        yield table.update
