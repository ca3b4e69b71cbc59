"""Undo the writes a window of time made to one collection, document by document.

The documents the window touched come from the archived oplog (chunks under
``oplog/``). Each one's state just before the window is its state in the
newest archive consistent before the window (one ranged read of that
collection's data member, scanned for the wanted ``_id``s), replayed with
its own entries up to the window (undo_images.py). Then, by mode:

- ``stage`` (the default): the pre-images of the documents the window deleted
  or changed go into a new collection ``COLL_undo_<YYYYmmddTHHMMSSZ>``, built
  under a staging name and published in one rename (staging.py);
- ``dry_run``: counts only, and the conflicts an apply would meet; nothing written;
- ``apply``: the pre-images are written back into the live collection, each
  write conditional on the state it expects (undo_target.py), in batches
  recorded in a ledger (undo_ledger.py) so an interrupted run is resumed and
  reported by the next one.

docs/undo.md describes the model and its limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._aio import shielded
from .._errors import CollectionExists, PointInTimeUnavailable, UsageError
from ..archive.manifest import COMPLETE, CollectionEntry, Manifest
from ..clients import MongoSource
from ..oplog.position import Ts, TsLike, as_ts
from ..progress import Progress, ProgressCallback, Stage, ignore
from ..source import Source
from ..storage import S3Config, Storage, opened
from . import pitr
from .engine import Engine
from .ledger import StagingLedger
from .staging import Expected, StagedCollection
from .undo_images import IdKey, Images, Timeline, document_key
from .undo_ledger import FINAL, Resumed, UndoLedger, describe, run_id
from .undo_target import UndoTarget

log = logging.getLogger("mongosnap.undo")

Warn = Callable[[str], None]
BATCH = 100
"""Documents per apply batch (one ledger record, one read of their live state)."""
MAX_LISTED = 1000
"""Conflicting ``_id``s listed in the report; ``conflicts`` counts them all."""
MODES = ("stage", "dry_run", "apply")
APPLIED = ("restored", "removed")


@dataclass
class UndoReport:
    """What an undo found and did. Counts are documents of the collection."""

    database: str
    collection: str
    mode: str
    archive_key: str
    consistent_point: str
    window_from: str
    window_to: str
    oplog_entries: int = 0
    """Archived entries of the collection read (archive member and chunks)."""
    touched: int = 0
    deleted: int = 0
    """Deleted in the window, with a pre-image to restore."""
    updated: int = 0
    """Changed in the window (not deleted), with their previous version."""
    inserted: int = 0
    """Inserted in the window (no pre-image): removed only with ``remove_inserted``."""
    unchanged: int = 0
    """Written in the window but back to their pre-image at its end."""
    staged_collection: str | None = None
    restored: int = 0
    """Apply: documents written back to their pre-image (this run and resumed ones)."""
    removed: int = 0
    """Apply: documents inserted in the window and deleted again."""
    kept_inserted: int = 0
    already: int = 0
    """Apply: documents already at their pre-image; nothing written."""
    conflicts: int = 0
    conflict_ids: list[dict[str, str]] = field(default_factory=list)
    """``{"_id": ..., "reason": "later" | "changed" | "raced"}``, at most MAX_LISTED."""
    resumed: bool = False
    """An earlier, interrupted run of the same undo was continued."""
    member_bytes: int = 0
    """Compressed size of the collection's data member in the archive."""
    bytes_fetched: int = 0
    """Bytes read from storage: the member and the oplog chunks."""
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def count(self, images: list[Images]) -> None:
        self.touched = len(images)
        for image in images:
            setattr(self, image.kind, getattr(self, image.kind) + 1)

    def add_conflict(self, key: IdKey, reason: str) -> None:
        self.conflicts += 1
        if len(self.conflict_ids) < MAX_LISTED:
            self.conflict_ids.append({"_id": describe(key), "reason": reason})


async def undo(
    target: MongoSource,
    destination: str | Storage,
    *,
    database: str,
    collection: str,
    start: TsLike,
    end: TsLike | None = None,
    mode: str = "stage",
    force: bool = False,
    remove_inserted: bool = False,
    stage_name: str | None = None,
    batch: int = BATCH,
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
    warn: Warn = log.warning,
    progress: ProgressCallback = ignore,
) -> UndoReport:
    """Undo the writes made to ``database.collection`` from ``start`` to ``end``.

    ``start``/``end``: a ``Ts`` or bson ``Timestamp`` (inclusive), or an aware
    datetime (``start`` from the beginning of its second, ``end`` to its end);
    ``end`` None: up to the newest archived oplog entry.
    ``mode``: ``"stage"`` (default) publishes the pre-images of the documents
    the window deleted or changed as a new collection (``stage_name``, default
    ``COLLECTION_undo_<YYYYmmddTHHMMSSZ>``) and changes nothing else;
    ``"dry_run"`` only counts (and finds what an apply would leave as
    conflicts); ``"apply"`` writes the pre-images back into the collection:
    a document written again after the window is a conflict and left alone
    unless ``force``, a document inserted in the window is deleted only with
    ``remove_inserted``, and every write is conditional on the state it
    expects, so a concurrent write by the application is not overwritten (on
    FerretDB, whose updates are not atomic, only re-inserts are: docs/undo.md).
    Running the same apply again resumes an interrupted one.

    Raises NoBackupsFound (no archive at all), PointInTimeUnavailable (no
    archive consistent before ``start``; the archived oplog does not cover
    the window or has a gap in it; the collection was dropped and recreated
    since the archive), CollectionExists (the staging name is taken).
    """
    if mode not in MODES:
        raise UsageError(f"undo mode is one of {', '.join(MODES)}, not {mode!r}")
    if batch < 1:
        raise UsageError("the batch size is at least 1")
    started = time.monotonic()
    first, last = _first(start), None if end is None else as_ts(end)
    if last is not None and last < first:
        raise UsageError(f"the window ends ({last}) before it starts ({first})")
    async with (
        opened(destination, s3) as storage,
        await Source.connect(target, connect_timeout=connect_timeout) as src,
    ):
        live = UndoTarget.of(src)
        ns = f"{database}.{collection}"
        ledger = UndoLedger(live, database, run_id(ns, first, last))
        resumed = await ledger.resume() if mode == "apply" else Resumed()
        last = resumed.last or last
        run = _Run(storage, live, database, collection, first, last, warn)
        images, report = await run.prepare(mode)
        report.resumed = resumed.batches > 0
        if mode == "stage":
            report.staged_collection = await _stage(live, report, images, stage_name)
        else:
            apply = _Apply(live, report, force, remove_inserted, progress)
            await apply.run(images, resumed, ledger if mode == "apply" else None, batch)
    report.duration = round(time.monotonic() - started, 3)
    return report


def _first(value: TsLike) -> Ts:
    """A window's first instant: a datetime from the start of its second."""
    if isinstance(value, datetime):
        return Ts(as_ts(value).t, 0)
    return as_ts(value)


def _before(first: Ts) -> Ts:
    return Ts(first.t, first.i - 1) if first.i else Ts(first.t - 1, 0xFFFFFFFF)


class _Run:
    """Reads what the window touched and each document's pre- and post-image."""

    def __init__(
        self,
        storage: Storage,
        live: UndoTarget,
        database: str,
        collection: str,
        first: Ts,
        last: Ts | None,
        warn: Warn,
    ) -> None:
        self.storage, self.live, self.warn = storage, live, warn
        self.database, self.collection = database, collection
        self.first, self.last = first, last

    async def prepare(self, mode: str) -> tuple[list[Images], UndoReport]:
        before = _before(self.first)
        plan = await pitr.plan_window(self.storage, self.database, before, self.last, self.warn)
        last = self.last or plan.target
        engine = Engine(self.storage, plan.archive, self.live, self.database)
        timeline = Timeline(self.database, self.collection, plan.start, self.first, last)
        async for raw in pitr.entries(engine, plan):
            timeline.add(raw)
        chunk_bytes = sum(c.object_bytes for c in plan.chunks)
        keys = timeline.touched()
        entry = self._entry(plan.archive.manifest)
        archived = await archived_documents(engine, entry, set(keys))
        images = [timeline.images(k, archived.get(k)) for k in keys]
        report = UndoReport(
            self.database,
            self.collection,
            mode,
            plan.archive.key,
            str(plan.start),
            str(self.first),
            str(last),
            oplog_entries=timeline.entries,
            member_bytes=0 if entry is None or entry.bson is None else _span(entry),
            bytes_fetched=engine.bytes_fetched + chunk_bytes,
        )
        report.count(images)
        log.info(
            "undo: %d documents touched in %s from %s to %s; archive %s",
            len(images),
            timeline.ns,
            self.first,
            last,
            plan.archive.key,
        )
        return images, report

    def _entry(self, manifest: Manifest | None) -> CollectionEntry | None:
        """The collection in the archive's manifest (None: it was not there yet)."""
        for entry in manifest.collections if manifest is not None else []:
            if (entry.database, entry.name) != (self.database, self.collection):
                continue
            if entry.status != COMPLETE:
                raise PointInTimeUnavailable(
                    f"{entry.database}.{entry.name} is {entry.status} in the archive (dropped "
                    "or replaced while it was dumped): it holds no state to undo to"
                )
            return entry
        return None


async def archived_documents(
    engine: Engine, entry: CollectionEntry | None, wanted: set[IdKey]
) -> dict[IdKey, bytes]:
    """The wanted documents of the collection's data member, streamed once."""
    found: dict[IdKey, bytes] = {}
    if entry is None or not wanted:
        return found
    async for document in engine.collection_documents(entry):
        key = document_key(document)
        if key in wanted:
            found[key] = document
    return found


def _span(entry: CollectionEntry) -> int:
    assert entry.bson is not None
    return entry.bson.end - entry.bson.offset


async def _stage(
    live: UndoTarget, report: UndoReport, images: list[Images], name: str | None
) -> str | None:
    """Publish the pre-images of the deleted and changed documents as a new collection."""
    documents = [i.pre for i in images if i.pre is not None and i.kind != "unchanged"]
    if not documents:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = name or f"{report.collection}_undo_{stamp}"
    ledger = StagingLedger()
    staged = StagedCollection(live, report.database, name, ledger=ledger)
    try:
        await staged.prepare(None)
        await staged.load(_joined(documents))
        await staged.finish(None, Expected(len(documents), sum(len(d) for d in documents)))
        if not await staged.publish(replace=False):
            raise CollectionExists(f"{report.database}.{name} exists: not replaced")
    finally:
        await shielded(ledger.finish(live))
    return name


async def _joined(documents: list[bytes]) -> AsyncIterator[bytes]:
    yield b"".join(documents)


class _Apply:
    """Writes pre-images back (``ledger`` set) or finds what that would meet (dry run)."""

    def __init__(
        self,
        live: UndoTarget,
        report: UndoReport,
        force: bool,
        remove_inserted: bool,
        progress: ProgressCallback,
    ) -> None:
        self.live, self.report = live, report
        self.force, self.remove_inserted = force, remove_inserted
        self.progress = progress
        self.writing = False

    async def run(
        self, images: list[Images], resumed: Resumed, ledger: UndoLedger | None, batch: int
    ) -> None:
        report = self.report
        self.writing = ledger is not None
        for outcome in FINAL:
            for key in resumed.outcomes.get(outcome, []):
                self._count(outcome, key)
        todo = [i for i in images if i.key not in resumed.settled]
        self._emit(Stage.STARTED, 0)
        if ledger is not None:
            await ledger.start(
                f"{report.database}.{report.collection}",
                Ts.parse(report.window_from),
                Ts.parse(report.window_to),
                report.archive_key,
            )
        for offset in range(0, len(todo), batch):
            part = todo[offset : offset + batch]
            await self._batch(part, resumed.pending, ledger)
            self._emit(Stage.BATCH, offset + len(part))
            log.debug("undo: %d of %d documents settled", offset + len(part), len(todo))
        if ledger is not None:
            await ledger.finish()
        self._emit(Stage.DONE, len(todo))

    async def _batch(
        self, part: list[Images], pending: set[IdKey], ledger: UndoLedger | None
    ) -> None:
        number = await ledger.begin([i.key for i in part]) if ledger is not None else 0
        current = await self.live.current(
            self.report.database, self.report.collection, [i.key for i in part]
        )
        outcomes: dict[str, list[IdKey]] = {}
        for image in part:
            outcome = await self._one(image, current.get(image.key), image.key in pending)
            outcomes.setdefault(outcome, []).append(image.key)
            self._count(outcome, image.key)
        if ledger is not None:
            await ledger.done(number, outcomes)

    async def _one(self, image: Images, now: bytes | None, pending: bool) -> str:
        """One document's outcome: written (when writing), or why not."""
        if now == image.pre:
            return "restored" if pending and image.kind != "unchanged" else "already"
        if image.pre is None and not self.remove_inserted:
            return "kept"
        if not self.force:
            if image.later:
                return "conflict:later"
            if now != image.post:
                return "conflict:changed"
        if not self.writing:
            return "removed" if image.pre is None else "restored"
        done = await self._write(image, now)
        if not done:
            return "conflict:raced"
        return "removed" if image.pre is None else "restored"

    async def _write(self, image: Images, now: bytes | None) -> bool:
        db, coll = self.report.database, self.report.collection
        if now is None:
            assert image.pre is not None
            return await self.live.insert_new(db, coll, image.pre)
        if image.pre is None:
            return await self.live.delete_if(db, coll, now)
        return await self.live.replace_if(db, coll, now, image.pre)

    def _count(self, outcome: str, key: IdKey) -> None:
        report = self.report
        if outcome.startswith("conflict:"):
            report.add_conflict(key, outcome.partition(":")[2])
        elif outcome == "kept":
            report.kept_inserted += 1
        else:
            setattr(report, outcome, getattr(report, outcome) + 1)

    def _emit(self, stage: Stage, done: int) -> None:
        self.progress(
            Progress(
                stage,
                self.report.database,
                self.report.collection,
                documents=done,
                total_documents=self.report.touched,
            )
        )
