"""Restore drill: prove the newest archive of a database restores, and how fast.

The newest complete archive holding the database is restored into a scratch
database (scratch.py; never the live names), each collection through the
same engine restore and heal use. Then every collection is checked against
the archive: count and size as the manifest says, the SHA-256 of the
documents as restored, order-independent (the SHA-256 of the documents'
sorted SHA-256s, compared with the same digest of the archive's member,
whose own stream SHA-256 must equal the manifest's), indexes and options.
Then the archive's oplog and the chunks under ``oplog/`` are replayed onto
the scratch copies as far as the archived oplog reaches without a gap (as
heal does). With ``compare_live`` the replayed copies are compared with the
live collections (counts and ``_id`` range digests, diff.py): drift is
reported, not a failure. The scratch database is dropped at the end, however
the drill ends; a drill record is written under ``drills/<db>/`` (drills.py).

RTO: per collection, the seconds its restore took; in total, the seconds
from the start of the restore to the end of the replay (checks excluded).
RPO: the archive's age when the drill started.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._aio import shielded
from .._checks import name_list
from .._errors import ArchiveError, DatabaseNotArchived, MongosnapError, NoBackupsFound, UsageError
from ..catalog import ArchiveInfo, ArchiveStatus, newest_archives
from ..clients import MongoSource
from ..encryption import Keys
from ..source import Source
from ..storage import S3Config, Storage, opened
from ..units import iso_utc
from . import contents, diff, drills, pitr, scratch, sealed
from .engine import PARALLEL_COLLECTIONS, CollectionOutcome, Engine, Selection, Status
from .ledger import StagingLedger

log = logging.getLogger("mongosnap.drill")

Warn = Callable[[str], None]


@dataclass(frozen=True)
class DrillCheck:
    """One collection: restored, then checked against the archive."""

    name: str
    ok: bool
    documents: int
    bytes: int
    sha256: str
    """The order-independent digest of the documents as restored."""
    rto_seconds: float
    problems: list[str] = field(default_factory=list)


@dataclass
class DrillReport:
    database: str
    archive_key: str
    archive_created: datetime
    scratch_database: str
    started: datetime
    finished: datetime | None = None
    rto_seconds: float = 0.0
    rpo_seconds: float = 0.0
    duration: float = 0.0
    oplog_replayed: int = 0
    replayed_to: str | None = None
    collections: list[DrillCheck] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    drift: list[dict[str, Any]] | None = None
    """With compare_live: the collections whose live contents differ from the
    replayed scratch copies (diff.py's per-collection objects); None without."""
    left_behind: str | None = None
    """Why the scratch database could not be dropped; None when it was."""
    record_key: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """Times as RFC 3339 strings (units.iso_utc), ready for JSON."""
        out = {**asdict(self), "ok": self.ok}
        for key in ("archive_created", "started", "finished"):
            out[key] = iso_utc(out[key])
        return out


async def drill(
    target: MongoSource,
    destination: str | Storage,
    *,
    database: str,
    collections: Sequence[str] = (),
    scratch_db: str | None = None,
    compare_live: bool = False,
    workers: int = 4,
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
    record: bool = True,
    ledger: StagingLedger | None = None,
    state: scratch.ScratchState | None = None,
    warn: Warn = log.warning,
    keys: Keys | None = None,
) -> DrillReport:
    """Restore the newest complete archive of ``database`` into a scratch
    database on ``target``, check it, replay the archived oplog, drop it.

    Failures (a collection not restored, a mismatch, a replay that stopped)
    are in the report's ``failures``; nothing raises for them. ``record``
    writes the drill record that ``check --max-drill-age`` reads. ``ledger``
    and ``state`` (optional) say what an interrupted drill left. ``keys`` open
    an encrypted archive (and its encrypted oplog chunks); without them the
    newest archive, if encrypted, stops the drill with NoIdentity rather than
    let an older plain one stand for the backup.
    """
    ledger = ledger if ledger is not None else StagingLedger()
    state = state if state is not None else scratch.ScratchState()
    names = frozenset(name_list(collections, "collections")) or None
    if scratch_db is not None and scratch_db == database:
        raise UsageError("the scratch database must not be the database drilled")
    async with opened(destination, s3) as storage:
        view, info = await newest(storage, database, keys)
        async with await Source.connect(target, connect_timeout=connect_timeout) as src:
            for name in await scratch.sweep(src, database):
                warn(f"dropped {name}, left by a drill that stopped")
            started = datetime.now(UTC)
            name = scratch_db or scratch.default_name(database, started)
            report = DrillReport(database, info.key, info.created, name, started)
            report.rpo_seconds = round(max(0.0, (started - info.created).total_seconds()), 3)
            state.name = name
            hold = scratch.Scratch(src, name)
            try:
                await hold.claim()
                state.claimed = True
                chosen = Selection(database, names)
                await _run(report, view, info, src, chosen, ledger, workers, keys)
                if compare_live:
                    await _drift(report, src, names)
            finally:
                await shielded(ledger.finish(src))
                report.left_behind = state.problem = await _released(hold)
                state.claimed = False
        report.finished = datetime.now(UTC)
        report.duration = round((report.finished - started).total_seconds(), 3)
        if record:
            report.record_key = await drills.write(storage, report.to_dict())
    return report


async def _released(hold: scratch.Scratch) -> str | None:
    """Release the scratch database to the end, even while being cancelled."""
    outcome: list[str | None] = [None]

    async def release() -> None:
        outcome[0] = await hold.release()

    await shielded(release())
    return outcome[0]


async def newest(
    storage: Storage, database: str, keys: Keys | None = None
) -> tuple[Storage, ArchiveInfo]:
    """The newest complete archive (with a manifest) holding ``database``, and
    the storage to read it through (an encrypted one's plaintext view)."""
    seen = False
    async for info in newest_archives(storage):
        seen = True
        if info.status is not ArchiveStatus.COMPLETE:
            continue
        if info.encrypted and info.databases is not None and database in info.databases:
            return await sealed.unseal(storage, info, keys)  # NoIdentity without keys
        if info.manifest is not None and database in info.manifest.databases:
            return storage, info
    if not seen:
        raise NoBackupsFound(f"no archive in {storage.url}")
    raise DatabaseNotArchived(f"no complete archive in {storage.url} holds {database}")


async def _run(
    report: DrillReport,
    storage: Storage,
    info: ArchiveInfo,
    src: Source,
    chosen: Selection,
    ledger: StagingLedger,
    workers: int,
    keys: Keys | None,
) -> None:
    engine = Engine(
        storage,
        info,
        src,
        report.scratch_database,
        workers=workers,
        ledger=ledger,
        parallel=PARALLEL_COLLECTIONS,
    )
    began = time.monotonic()
    outcomes = await engine.restore(chosen)
    restored_at = time.monotonic()
    await _check(report, storage, info, src, outcomes)
    checks_took = time.monotonic() - restored_at
    await _replay(report, storage, engine, outcomes, keys)
    report.rto_seconds = round(time.monotonic() - began - checks_took, 3)


async def _check(
    report: DrillReport,
    storage: Storage,
    info: ArchiveInfo,
    src: Source,
    outcomes: list[CollectionOutcome],
) -> None:
    entries = {e.name: e for e in contents.archive_entries(info, report.database)}
    for outcome in outcomes:
        if outcome.status is not Status.RESTORED:
            report.failures.append(
                f"{outcome.name}: not restored ({outcome.error or outcome.status})"
            )
            report.collections.append(
                DrillCheck(outcome.name, False, 0, 0, "", outcome.duration, [outcome.error])
            )
            continue
        check = await _check_one(report, storage, info, src, entries[outcome.name], outcome)
        report.collections.append(check)
        report.failures += [f"{check.name}: {p}" for p in check.problems]


async def _check_one(
    report: DrillReport,
    storage: Storage,
    info: ArchiveInfo,
    src: Source,
    entry: Any,
    outcome: CollectionOutcome,
) -> DrillCheck:
    spec = await src.collection(report.scratch_database, entry.name)
    restored = await contents.read_collection(
        src, report.scratch_database, entry.name, spec.options if spec else {}
    )
    problems = []
    if restored.documents != entry.documents:
        problems.append(
            f"{restored.documents} documents restored, the manifest says {entry.documents}"
        )
    if restored.bytes != entry.bson_bytes:
        problems.append(f"{restored.bytes} bytes restored, the manifest says {entry.bson_bytes}")
    try:
        archived = await contents.read_entry(storage, info, entry)
    except ArchiveError as exc:
        problems.append(f"the archive fails its checks: {exc}")
    else:
        if restored.digest != archived.digest:
            problems.append("the documents restored differ from the archive's (SHA-256)")
        if restored.indexes != archived.indexes:
            problems.append(_index_problem(archived.indexes, restored.indexes))
        if restored.options != archived.options:
            problems.append(f"options {restored.options}, the archive says {archived.options}")
    return DrillCheck(
        entry.name,
        not problems,
        restored.documents,
        restored.bytes,
        restored.digest,
        outcome.duration,
        problems,
    )


def _index_problem(archived: dict[str, str], restored: dict[str, str]) -> str:
    missing = sorted(archived.keys() - restored.keys())
    extra = sorted(restored.keys() - archived.keys())
    other = sorted(n for n in archived.keys() & restored.keys() if archived[n] != restored[n])
    parts = [
        f"{what}: {', '.join(names)}"
        for what, names in (("missing", missing), ("unexpected", extra), ("different", other))
        if names
    ]
    return "indexes differ from the archive's (" + "; ".join(parts) + ")"


async def _replay(
    report: DrillReport,
    storage: Storage,
    engine: Engine,
    outcomes: list[CollectionOutcome],
    keys: Keys | None,
) -> None:
    """The archive's oplog, then the chunks as far as they reach without a gap."""
    info = engine.info
    if info.manifest is None or info.manifest.oplog is None:
        return
    from .restore import _replay as replay_onto  # the oplog modules load only when needed

    restored = [o for o in outcomes if o.status is Status.RESTORED]
    try:
        plan = await pitr.since(storage, info)
        if plan is not None:
            plan = await pitr.unlock(storage, plan, keys)
        replayed = await replay_onto(engine, restored, report.database, plan)
    except MongosnapError as exc:
        report.failures.append(f"oplog replay: {type(exc).__name__}: {exc}")
        return
    report.oplog_replayed = sum(replayed.applied.values())
    report.replayed_to = str(plan.target if plan is not None else pitr.consistent_point(info))
    for namespace, cause in sorted(replayed.stopped.items()):
        report.failures.append(f"{namespace}: oplog replay stopped ({cause})")


async def _drift(report: DrillReport, src: Source, names: frozenset[str] | None) -> None:
    """The replayed scratch copies (side A) against the live collections (side B):
    diff.py's objects, ``removed`` for a collection gone from the live database."""
    restored = [c.name for c in report.collections if c.ok]
    wanted = restored if names is None else [n for n in restored if n in names]
    copies = await contents.from_server(src, report.scratch_database, wanted)
    live = await contents.from_server(src, report.database, wanted)
    found = [diff.compare_one(n, copies.get(n), live.get(n)) for n in wanted]
    report.drift = [dataclasses.asdict(d) for d in found if d.state != "same"]
