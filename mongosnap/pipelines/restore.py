"""Restore collections of one archive into a MongoDB database.

Chooses the archive and the collections, refuses to overwrite unless asked,
and hands the work to the engine (engine.py), which restores each collection
on its own: one that fails is reported with its cause and the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .._aio import shielded
from .._errors import ArchiveError, CollectionExists
from ..catalog import ArchiveInfo, ArchiveStatus, resolve
from ..progress import ProgressCallback, ignore
from ..source import Source
from ..storage import S3Config, Storage, opened
from .engine import CollectionOutcome, Engine, Selection, Status
from .ledger import StagingLedger

log = logging.getLogger("mongosnap.restore")

Warn = Callable[[str], None]

__all__ = ["CollectionOutcome", "RestoreResult", "Status", "restore", "selection"]


@dataclass(frozen=True)
class RestoreResult:
    archive_key: str
    archive_size: int
    bytes_fetched: int
    collections: list[CollectionOutcome] = field(default_factory=list)
    duration: float = 0.0

    @property
    def failed(self) -> list[CollectionOutcome]:
        return [c for c in self.collections if c.status is Status.FAILED]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def selection(
    database: str,
    collections: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Selection:
    """The collections of one database of the archive, by names and/or patterns."""
    names = frozenset(collections) if collections else None
    return Selection(database, names, tuple(include), tuple(exclude))


async def restore(
    target: Any,
    destination: str | Storage,
    archive: str = "latest",
    *,
    database: str,
    collections: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    to_database: str | None = None,
    drop: bool = False,
    workers: int = 4,
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
    allow_incomplete: bool = False,
    warn: Warn = log.warning,
    ledger: StagingLedger | None = None,
    progress: ProgressCallback = ignore,
) -> RestoreResult:
    """Restore ``database`` (all or some collections) from an archive.

    Existing collections are never overwritten unless ``drop``: with a
    manifest the restore refuses up front (CollectionExists names them);
    a legacy archive reports them as ``exists`` and restores the others.
    A collection that cannot be restored is ``failed`` with its ``error``;
    the others are restored. An archive listed as incomplete is refused
    unless ``allow_incomplete`` (then read like a legacy archive, with a
    warning). ``ledger`` (optional) records what an interrupted run left.
    ``progress`` is called per collection (STARTED, BATCH after each stored
    batch, then DONE, FAILED or SKIPPED), with the manifest's totals when known.
    """
    started = time.monotonic()
    ledger = ledger if ledger is not None else StagingLedger()
    async with opened(destination, s3) as storage:
        info = await resolve(storage, archive)
        _check_usable(info, allow_incomplete, warn)
        async with await Source.connect(target, connect_timeout=connect_timeout) as src:
            engine = Engine(
                storage,
                info,
                src,
                to_database or database,
                workers=workers,
                replace=drop,
                ledger=ledger,
                progress=progress,
            )
            chosen = selection(database, collections, include, exclude)
            try:
                await _refuse_overwrite(engine, chosen)
                outcomes = await engine.restore(chosen)
            finally:
                await shielded(ledger.finish(src))
    duration = round(time.monotonic() - started, 3)
    return RestoreResult(info.key, info.size, engine.bytes_fetched, outcomes, duration)


def _check_usable(info: ArchiveInfo, allow_incomplete: bool, warn: Warn) -> None:
    if info.status is not ArchiveStatus.INCOMPLETE:
        return
    if not allow_incomplete:
        raise ArchiveError(
            f"{info.key} is incomplete ({info.problem}); "
            "--allow-incomplete (allow_incomplete=True) restores from it anyway"
        )
    warn(
        f"restoring from incomplete archive {info.key} ({info.problem}): "
        "read without a manifest, so counts and checksums are not checked"
    )


async def _refuse_overwrite(engine: Engine, chosen: Selection) -> None:
    entries = engine.entries(chosen)
    if engine.replace or entries is None:
        return
    existing = await engine.target.collection_names(engine.to_database)
    taken = sorted(e.name for e in entries if e.name in existing)
    if taken:
        raise CollectionExists(
            f"{engine.to_database} already has {', '.join(taken)}; "
            "restore into another database (--to-database) or replace them (--drop)"
        )
