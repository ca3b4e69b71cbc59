"""Restore collections of one archive into a MongoDB database.

Chooses the archive and the collections, refuses to overwrite unless asked,
and hands the work to the engine (engine.py), which restores each collection
on its own: one that fails is reported with its cause and the others go on.
Then the oplog is replayed onto the restored collections: the archive's own
``dump/oplog.bson`` (to its consistent point), and with a target instant the
chunks under ``oplog/`` up to it (pitr.py chooses the archive and chunks).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .._aio import shielded
from .._checks import name_list
from .._errors import ArchiveError, CollectionExists, NothingMatched, UsageError, listing
from ..archive.manifest import Manifest
from ..catalog import ArchiveInfo, ArchiveStatus, resolve
from ..clients import MongoSource
from ..encryption import Keys
from ..oplog.position import Ts, TsLike, as_ts
from ..oplog.replay import replay
from ..oplog.report import ReplayReport
from ..progress import ProgressCallback, ignore
from ..source import Source
from ..storage import S3Config, Storage, opened
from . import pitr, sealed, users
from .engine import PARALLEL_COLLECTIONS, CollectionOutcome, Engine, Selection, Status
from .lease import LEASES
from .ledger import StagingLedger

log = logging.getLogger("mongosnap.restore")

Warn = Callable[[str], None]

__all__ = ["CollectionOutcome", "RestoreReport", "Status", "restore", "selection"]


@dataclass(frozen=True)
class RestoreReport:
    archive_key: str
    archive_size: int
    bytes_fetched: int
    collections: list[CollectionOutcome] = field(default_factory=list)
    duration: float = 0.0
    oplog_replayed: int = 0
    """Oplog entries applied onto the restored collections."""
    restored_to: str | None = None
    """The oplog ts (``SECONDS:INC``) the collections were brought to: the
    archive's consistent point, or the target of a point-in-time restore;
    None when no oplog was replayed."""
    replay: dict[str, Any] | None = None
    """The replay report (``ReplayReport.to_dict()``), None when none ran."""
    users: dict[str, list[str]] | None = None
    """restore --users-and-roles: {"restored": [...], "existing": [...]}, names only."""

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
    names = frozenset(name_list(collections, "collections")) or None
    return Selection(database, names, tuple(include), tuple(exclude))


async def restore(
    target: MongoSource,
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
    oplog_replay: bool = True,
    to_ts: TsLike | None = None,
    to_time: datetime | None = None,
    progress: ProgressCallback = ignore,
    keys: Keys | None = None,
    users_and_roles: bool = False,
) -> RestoreReport:
    """Restore ``database`` (all or some collections) from an archive.

    Existing collections are never overwritten unless ``drop``: with a
    manifest the restore refuses up front (CollectionExists names them);
    a legacy archive reports them as ``exists`` and restores the others.
    A collection that cannot be restored is ``failed`` with its ``error``;
    the others are restored. An archive listed as incomplete is refused
    unless ``allow_incomplete`` (then read like a legacy archive, with a
    warning). ``ledger`` (optional) records what an interrupted run left.

    When the manifest has an ``oplog`` window, its ``dump/oplog.bson`` is
    replayed onto the restored collections (their namespaces only, renamed
    with ``to_database``) unless ``oplog_replay`` is False. ``to_ts`` or
    ``to_time`` (aware): restore to that instant from the newest archive
    consistent at or before it (``archive`` ``latest``) or the one named,
    then replay the chunks under ``oplog/`` up to it (PointInTimeUnavailable
    when they do not reach it without a gap).
    ``users_and_roles``: also restore the archive's users and roles of
    ``database`` (backup --users-and-roles) that the target lacks; one that
    exists is left alone and reported. Not with a different ``to_database``.
    ``progress`` is called per collection (STARTED, BATCH after each stored
    batch, then DONE, FAILED or SKIPPED), with the manifest's totals when known.
    ``keys`` open an encrypted archive (NoIdentity without them, before the
    server is touched); every chunk is authenticated before its bytes are used.
    """
    started = time.monotonic()
    ledger = ledger if ledger is not None else StagingLedger()
    point = _target_ts(to_ts, to_time, oplog_replay)
    if users_and_roles:
        users.check_target(database, to_database)
    async with opened(destination, s3) as storage:
        plan = None
        if point is not None:
            plan = await pitr.unlock(storage, await pitr.plan(storage, archive, point, warn), keys)
            info = plan.archive
        else:
            info = await resolve(storage, archive)
        _check_usable(info, allow_incomplete, warn)
        reader, info = await sealed.unseal(storage, info, keys)
        chosen = selection(database, collections, include, exclude)
        if info.manifest is not None:  # refuse before touching the server
            _check_matches(info.key, _manifest_holds(info.manifest), chosen)
        async with await Source.connect(target, connect_timeout=connect_timeout) as src:
            engine = Engine(
                reader,
                info,
                src,
                to_database or database,
                workers=workers,
                replace=drop,
                ledger=ledger,
                progress=progress,
                parallel=PARALLEL_COLLECTIONS,
            )
            # read and checked before anything is written: a corrupt member fails alone
            accounts = await _user_documents(engine, info, database) if users_and_roles else None
            try:
                await _refuse_overwrite(engine, chosen)
                outcomes = await engine.restore(chosen)
            finally:
                await shielded(ledger.finish(src))
            if info.manifest is None and not outcomes:  # known once the archive was read
                _check_matches(info.key, engine.held, chosen)
            report = None
            if oplog_replay and _has_window(info):
                report = await _replay(engine, outcomes, database, plan)
                outcomes = _stopped_ones_failed(outcomes, report, database)
            put_back = None if accounts is None else await users.restore(src, accounts)
    duration = round(time.monotonic() - started, 3)
    return RestoreReport(
        info.key,
        info.size,
        engine.bytes_fetched,
        outcomes,
        duration,
        oplog_replayed=sum(report.applied.values()) if report else 0,
        restored_to=_restored_to(info, plan) if report else None,
        replay=report.to_dict() if report else None,
        users=put_back.to_dict() if put_back is not None else None,
    )


async def _user_documents(
    engine: Engine, info: ArchiveInfo, database: str
) -> dict[str, list[bytes]]:
    """The archive's users and roles of ``database``, read and checked."""
    if info.manifest is None or not any(u.database == database for u in info.manifest.users):
        raise UsageError(
            f"archive {info.key} holds no users and roles of {database}"
            " (it was not made with backup --users-and-roles)"
        )
    return await engine.user_documents(database)


def _target_ts(to_ts: TsLike | None, to_time: datetime | None, oplog_replay: bool) -> Ts | None:
    if to_ts is not None and to_time is not None:
        raise UsageError("give either a target ts or a target time, not both")
    if to_time is not None:
        if to_time.tzinfo is None:
            raise UsageError("the target time needs a time zone")
        to_ts = to_time
    if to_ts is not None and not oplog_replay:
        raise UsageError("a restore to a point in time replays the oplog: drop --no-oplog-replay")
    return None if to_ts is None else as_ts(to_ts)


def _has_window(info: ArchiveInfo) -> bool:
    return info.manifest is not None and info.manifest.oplog is not None


def _restored_to(info: ArchiveInfo, plan: pitr.PitrPlan | None) -> str:
    return str(plan.target if plan is not None else pitr.consistent_point(info))


async def _replay(
    engine: Engine,
    outcomes: list[CollectionOutcome],
    database: str,
    plan: pitr.PitrPlan | None,
) -> ReplayReport:
    """Replay the archive's oplog member (then the plan's chunks) onto what was restored."""
    restored = {f"{database}.{c.name}" for c in outcomes if c.status is Status.RESTORED}
    report = await replay(
        engine.target,
        pitr.entries(engine, plan),
        namespaces=restored,
        databases={database: engine.to_database},
        until=plan.target.to_bson() if plan is not None else None,
    )
    log.info("replayed %s oplog entries onto %s", sum(report.applied.values()), sorted(restored))
    return report


def _stopped_ones_failed(
    outcomes: list[CollectionOutcome], report: ReplayReport, database: str
) -> list[CollectionOutcome]:
    """A collection whose replay stopped on an entry (the others went on) is
    ``failed``: restored, but short of the target instant."""
    marked = []
    for outcome in outcomes:
        cause = report.stopped.get(f"{database}.{outcome.name}")
        if cause is not None:
            outcome = dataclasses.replace(
                outcome,
                status=Status.FAILED,
                error=f"restored, but its oplog replay stopped ({cause}); "
                "it holds every entry before that one",
            )
        marked.append(outcome)
    return marked


def _manifest_holds(manifest: Manifest) -> dict[str, set[str]]:
    """Database -> collection names, per the manifest (a database may hold none)."""
    held: dict[str, set[str]] = {name: set() for name in manifest.databases}
    for entry in manifest.collections:
        if entry.name != LEASES:  # another run's bookkeeping, caught by a backup
            held.setdefault(entry.database, set()).add(entry.name)
    return held


def _check_matches(key: str, held: Mapping[str, set[str]], chosen: Selection) -> None:
    """NothingMatched when the database, or the collections and patterns asked
    for, match nothing the archive holds. An empty database asked for whole is
    no mistake: restoring it restores nothing."""
    names = held.get(chosen.database)
    if names is None:
        raise NothingMatched(
            f"archive {key} holds no database {chosen.database!r}; "
            f"it holds: {listing(held) if held else 'no database'}"
        )
    asked = _asked(chosen)
    if not asked or any(chosen.wants(chosen.database, name) for name in names):
        return
    holds = f"it holds: {listing(names)}" if names else "it holds no collection"
    raise NothingMatched(
        f"no collection of {chosen.database} in archive {key} matches {asked}; {holds}"
    )


def _asked(chosen: Selection) -> str:
    """The selection, as the restore was given it; empty when it is the whole database."""
    parts = []
    if chosen.names is not None:
        parts.append(f"collections {listing(chosen.names)}")
    if chosen.include:
        parts.append(f"include {', '.join(chosen.include)}")
    if chosen.exclude:
        parts.append(f"exclude {', '.join(chosen.exclude)}")
    return "; ".join(parts)


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
    existing = await engine.target_names()  # the engine's own listing: one per run
    taken = sorted(e.name for e in entries if e.name in existing)
    if taken:
        raise CollectionExists(
            f"{engine.to_database} already has {', '.join(taken)}; "
            "restore into another database (--to-database) or replace them (--drop)"
        )
