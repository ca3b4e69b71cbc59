"""Heal: bring back watched collections that have vanished, from the newest archives.

The legacy healer's semantics, improved: archives are searched newest first,
each vanished collection comes from the newest archive that holds it; an
archive that fails its checks is skipped with a warning (and does not count
towards ``depth``); a collection that fails to restore from one archive is
reported with its cause and tried again from the next; incomplete archives
are never used; collections that are still there are never touched, and one
that reappears while being healed (an application recreated it) is left alone
and reported. A collection another run is healing (it holds the collection's
lease, lease.py) is left to that run and reported ``busy``.

When the archive has an oplog window and the chunks under ``oplog/`` cover
the time since its consistent point, the restored collections are brought
to the instant before they vanished before they are published: the
archive's oplog member and the chunks are replayed, with ``before_loss``
(pitr.py), into their staging copies (a namespace map in the replay), so a
reader sees each collection once, at that instant, or not at all. A replay
that stops on an entry publishes what it reached (the archive plus the
entries before that one) with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .._aio import shielded
from .._checks import name_list
from .._errors import (
    ArchiveError,
    DatabaseNotArchived,
    DecryptionFailed,
    NoBackupsFound,
    ReplayError,
    UsageError,
    listing,
)
from ..catalog import ArchiveInfo, newest_archives
from ..clients import MongoSource
from ..encryption import Keys
from ..progress import ProgressCallback, ignore
from ..source import Source
from ..storage import S3Config, Storage, opened
from . import sealed, users
from .damage import Damage, find_damage, live_counts, newest_manifest, repair
from .engine import CollectionOutcome, Engine, Selection, Status
from .ledger import StagingLedger

if TYPE_CHECKING:  # the oplog modules load only for an archive with an oplog window
    from ..oplog.report import ReplayReport
    from .pitr import PitrPlan
    from .staging import StagedCollection

DEFAULT_DEPTH = 3

log = logging.getLogger("mongosnap.heal")


@dataclass(frozen=True)
class SkippedArchive:
    key: str
    reason: str


@dataclass(frozen=True)
class HealReplay:
    """The oplog replayed onto collections healed from one archive.

    ``covered_to`` is the newest archived entry replayed from; ``restored_to``
    gives, per collection, the instant it was brought to: ``before TS`` when
    the entry that took it away (drop, rename, dropDatabase) was found and
    held back, else ``covered_to`` (every archived entry for it applied).
    """

    archive: str
    collections: list[str]
    consistent_point: str
    covered_to: str
    entries: int
    restored_to: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HealReport:
    """What a heal found and did.

    ``missing`` lists what is still missing afterwards; ``failures`` every
    attempt that failed (collection, archive, cause), including those a later
    archive made good.
    """

    database: str
    watched: list[str]
    healthy: list[str]
    restored: list[CollectionOutcome] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: list[SkippedArchive] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)
    bytes_fetched: int = 0
    dry_run: bool = False
    duration: float = 0.0
    failures: list[CollectionOutcome] = field(default_factory=list)
    replays: list[HealReplay] = field(default_factory=list)
    """Oplog replays that brought healed collections past their archive."""
    users: dict[str, list[str]] | None = None
    """heal --users-and-roles: users and roles put back and left alone (names),
    from the newest archive holding them; None without the flag."""
    damaged: list[Damage] = field(default_factory=list)
    """Present collections emptied or shrunk since the newest archive (damage.py)."""

    @property
    def vanished(self) -> list[str]:
        return [c for c in self.watched if c not in self.healthy]

    @property
    def busy(self) -> list[str]:
        """Vanished collections another run was healing: left to it."""
        return [o.name for o in self.restored if o.status is Status.BUSY]

    @property
    def failed(self) -> list[str]:
        """Missing collections that some archive held but could not give back."""
        tried = {f.name for f in self.failures}
        return [c for c in self.missing if c in tried]

    @property
    def unrepaired(self) -> list[str]:
        """Damaged collections left as they are (reported, or their repair failed)."""
        return [d.name for d in self.damaged if d.status in ("reported", "failed")]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.busy and not self.unrepaired

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["vanished"] = self.vanished
        out["failed"] = self.failed
        out["busy"] = self.busy
        out["unrepaired"] = self.unrepaired
        out["ok"] = self.ok
        return out


Warn = Callable[[str], None]


async def heal(
    target: MongoSource,
    destination: str | Storage,
    *,
    database: str,
    collections: Sequence[str],
    depth: int = DEFAULT_DEPTH,
    dry_run: bool = False,
    workers: int = 4,
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
    warn: Warn = log.warning,
    ledger: StagingLedger | None = None,
    progress: ProgressCallback = ignore,
    keys: Keys | None = None,
    users_and_roles: bool = False,
    restore_missing: bool = False,
    shrink_threshold: float | None = None,
) -> HealReport:
    """Restore the watched ``collections`` of ``database`` that have vanished.

    Raises NoBackupsFound when there is something to heal and no archive at
    all, DatabaseNotArchived (a NoBackupsFound) when archives exist but none
    holds ``database``; otherwise returns a report whose ``missing`` is empty when all is well.
    ``ledger`` (optional) records what an interrupted run left.
    ``progress`` is called per collection being restored, as for restore()
    (nothing in a dry run). ``keys`` open encrypted archives: without them
    the first encrypted archive heal would use stops it with NoIdentity,
    before anything of it is staged; one that fails authentication
    (tampered, truncated, a swapped sidecar) is skipped with a warning.
    ``users_and_roles``: also put back the database's users and roles the
    server lacks, from the newest archive (within ``depth``) that holds them
    (backup --users-and-roles); existing ones are left alone. Not in a dry run.

    Present collections are checked against the newest archive with a
    manifest: emptied ones, and with ``shrink_threshold`` (percent) those
    that lost more than that share of their archived documents, are
    ``damaged``; ``restore_missing`` inserts their archived documents whose
    _id is absent, never replacing one (damage.py).
    """
    if shrink_threshold is not None and not 0 < shrink_threshold <= 100:
        raise UsageError("the shrink threshold is a percentage above 0, at most 100")
    started = time.monotonic()
    watched = list(dict.fromkeys(name_list(collections, "collections")))
    ledger = ledger if ledger is not None else StagingLedger()
    async with (
        opened(destination, s3) as storage,
        await Source.connect(target, connect_timeout=connect_timeout) as src,
    ):
        existing = await src.collection_names(database)
        healthy = [c for c in watched if c in existing]
        vanished = [c for c in watched if c not in existing]
        search = _Search(storage, src, database, vanished, workers, dry_run, warn, ledger)
        search.progress = progress
        search.present = existing  # the engines list no more (Engine.target_names)
        search.keys = keys
        try:
            if vanished:
                await storage.check()
                await search.run(depth)
            damaged = await _damage(
                storage,
                src,
                database,
                healthy,
                shrink_threshold,
                restore_missing,
                dry_run,
                keys,
                ledger,
            )
        finally:
            await shielded(ledger.finish(src))
        accounts = None
        if users_and_roles and not dry_run:
            accounts = await _users(storage, src, database, depth, warn, keys)
    return HealReport(
        database=database,
        watched=watched,
        healthy=healthy,
        restored=search.outcomes,
        missing=[c for c in vanished if c in search.remaining],
        skipped=search.skipped,
        searched=search.searched,
        bytes_fetched=search.bytes_fetched,
        dry_run=dry_run,
        duration=round(time.monotonic() - started, 3),
        failures=search.failures,
        replays=search.replays,
        users=accounts.to_dict() if accounts is not None else None,
        damaged=damaged,
    )


async def _users(
    storage: Storage, target: Source, database: str, depth: int, warn: Warn, keys: Keys | None
) -> users.UsersReport:
    """The users and roles of the newest archive (of ``depth``) holding them, put back."""
    looked = 0
    async with contextlib.aclosing(newest_archives(storage, database=database)) as archives:
        async for info in archives:
            if not info.trusted:
                continue
            view = storage
            if info.encrypted:  # its manifest is sealed; a missing key stops here
                view, info = await sealed.unseal(storage, info, keys)
            if info.manifest is None:
                continue
            looked += 1
            if any(u.database == database for u in info.manifest.users):
                engine = Engine(view, info, target, database)
                return await users.restore(target, await engine.user_documents(database))
            if looked >= depth:
                break
    warn(f"no archive of the {depth} newest holds the users and roles of {database}")
    return users.UsersReport()


async def _damage(
    storage: Storage,
    src: Source,
    database: str,
    present: list[str],
    threshold: float | None,
    restore_missing: bool,
    dry_run: bool,
    keys: Keys | None,
    ledger: StagingLedger,
) -> list[Damage]:
    """The damaged present collections, repaired with ``restore_missing``.

    The archives are read only when a collection is empty or a threshold is
    set: a heal that finds everything present and filled touches no storage."""
    live = await live_counts(src, database, present)
    if threshold is None and all(live.values()):
        return []
    found = await newest_manifest(storage, database, keys)
    if found is None:
        log.info("no archive with a manifest holds %s: emptied collections not checked", database)
        return []
    view, info = found
    damaged = find_damage(info, database, live, threshold)
    if not damaged or not restore_missing:
        return damaged
    return await repair(
        view, src, info, database, damaged, dry_run=dry_run, keys=keys, ledger=ledger
    )


class _Search:
    """Walks the archives newest first until nothing remains or depth is reached."""

    def __init__(
        self,
        storage: Storage,
        target: Source,
        database: str,
        vanished: list[str],
        workers: int,
        dry_run: bool,
        warn: Warn,
        ledger: StagingLedger,
    ) -> None:
        self.storage = storage
        self.target = target
        self.database = database
        self.remaining = set(vanished)
        self.workers = workers
        self.dry_run = dry_run
        self.warn = warn
        self.ledger = ledger
        self.outcomes: list[CollectionOutcome] = []
        self.failures: list[CollectionOutcome] = []
        self.skipped: list[SkippedArchive] = []
        self.searched: list[str] = []
        self.bytes_fetched = 0
        self.replays: list[HealReplay] = []
        self.progress: ProgressCallback = ignore
        self.present: set[str] | None = None
        """The database's names as listed at the start, shared by the engines."""
        self.keys: Keys | None = None

    async def run(self, depth: int) -> None:
        seen = False
        passed: list[ArchiveInfo] = []  # archives that do not hold the database
        async with contextlib.aclosing(
            newest_archives(
                self.storage, database=self.database, passed=passed, collections=self.remaining
            )
        ) as archives:
            async for info in archives:
                seen = True
                await self._consider(info)
                if not self.remaining or len(self.searched) >= depth:
                    return  # before the next archive is even classified
        if seen:
            return
        if passed:  # each was read to its end: their databases are all known
            held = {name for info in passed for name in info.databases or ()}
            raise DatabaseNotArchived(
                f"no archive in {self.storage.url} holds database {self.database}"
                f" (they hold: {listing(held)})"
            )
        raise NoBackupsFound(f"no backups found in {self.storage.url}")

    async def _consider(self, info: ArchiveInfo) -> None:
        """Use one archive, unless it is incomplete."""
        if not info.trusted:  # INCOMPLETE, or ARCHIVED (unreadable until restored)
            self._skip(info, info.problem or f"{info.status.value} archive")
            return
        await self._try(info)

    async def _try(self, info: ArchiveInfo) -> None:
        try:  # NoIdentity (no key, a wrong key) is raised: every older archive needs it too
            storage, info = await sealed.unseal(self.storage, info, self.keys)
        except (ArchiveError, DecryptionFailed) as exc:
            self._skip(info, str(exc))
            return
        engine = Engine(
            storage,
            info,
            self.target,
            self.database,
            workers=self.workers,
            ledger=self.ledger,
            progress=self.progress,
            present=self.present,
        )
        wanted = Selection(self.database, frozenset(self.remaining))
        replaying = None if self.dry_run else _Replaying.of(engine, self.database)
        try:
            if replaying is not None:
                await replaying.check_keys(self.keys)
            if self.dry_run:
                outcomes = await engine.plan(wanted)
            else:
                outcomes = await engine.restore(wanted, before_publish=replaying)
        except (ArchiveError, DecryptionFailed) as exc:
            self._skip(info, str(exc))
            return
        finally:
            self.bytes_fetched += engine.bytes_fetched
        self.searched.append(info.key)
        for outcome in outcomes:
            if outcome.status is Status.FAILED:
                self.warn(f"{outcome.name} not restored from {info.key}: {outcome.error}")
                self.failures.append(outcome)
                continue
            self.remaining.discard(outcome.name)
            self.outcomes.append(outcome)
        restored = [o.name for o in outcomes if o.status is Status.RESTORED]
        if restored and replaying is not None:
            self._record(engine, replaying, restored)

    def _record(self, engine: Engine, replaying: _Replaying, names: list[str]) -> None:
        """Report the replay that brought the collections published from this
        archive to the instant before they vanished (or where it stopped)."""
        if replaying.error is not None:
            self.warn(
                f"{', '.join(names)} restored from {engine.info.key}; oplog replay stopped "
                f"(the entries before it are applied): {replaying.error}"
            )
            return
        report, plan = replaying.report, replaying.plan
        if report is None or plan is None:  # no chunks cover its consistent point
            return
        for name in names:
            cause = report.stopped.get(f"{self.database}.{name}")
            if cause is not None:
                self.warn(
                    f"{name} restored from {engine.info.key}; its oplog replay stopped "
                    f"(the entries before it are applied, the other collections went on): {cause}"
                )
        restored_to = {name: self._instant(report, name, plan) for name in names}
        entries = sum(report.applied.values())
        for name, instant in restored_to.items():
            log.info(
                "%s.%s healed from %s to %s: %d oplog entries replayed",
                *(self.database, name, engine.info.key, instant, entries),
            )
        self.replays.append(
            HealReplay(
                engine.info.key, names, str(plan.start), str(plan.target), entries, restored_to
            )
        )

    def _instant(self, report: ReplayReport, name: str, plan: PitrPlan) -> str:
        """``before TS`` of the entry that took the collection away, else the coverage end."""
        if f"{self.database}.{name}" in report.stopped:
            return "before the entry its replay stopped on (warned)"
        for key in (f"{self.database}.{name}", f"{self.database}.*"):
            if key in report.lost:
                from ..oplog.entry import format_ts

                return f"before {format_ts(report.lost[key])}"
        return str(plan.target)

    def _skip(self, info: ArchiveInfo, reason: str) -> None:
        self.warn(f"skipping archive {info.key}: {reason}")
        self.skipped.append(SkippedArchive(info.key, reason))


class _Replaying:
    """The engine's before_publish hook: replay the oplog into the staging copies.

    Entries logged for ``db.name`` are written to its staging copy (the
    replay's namespace map); ``before_loss`` holds back the drop, rename or
    dropDatabase that took it away, so the replay never drops or renames a
    staging copy. An entry that stops the replay (or a chunk that fails its
    checks) is kept in ``error``: the copies hold the entries before it and
    are published so, with a warning. Anything else (the server or the
    storage gone, a signal) ends the heal and the engine discards the copies.
    """

    def __init__(self, engine: Engine, database: str) -> None:
        self.engine = engine
        self.database = database
        self.plan: PitrPlan | None = None
        self.report: ReplayReport | None = None
        self.error: ArchiveError | ReplayError | None = None
        self.keys: Keys | None = None

    async def check_keys(self, keys: Keys | None) -> None:
        """Before anything is staged: the keys open the encrypted oplog chunks
        the replay would read now (NoIdentity otherwise). The replay itself
        reads the coverage again, for chunks written meanwhile."""
        from . import pitr

        self.keys = keys
        plan = await pitr.since(self.engine.storage, self.engine.info)
        if plan is not None:
            await pitr.unlock(self.engine.storage, plan, keys)

    @classmethod
    def of(cls, engine: Engine, database: str) -> _Replaying | None:
        """The hook, or None when the archive has no consistent point to replay from."""
        manifest = engine.info.manifest
        if manifest is None or manifest.oplog is None:
            return None
        return cls(engine, database)

    async def __call__(self, staged: list[StagedCollection]) -> None:
        from ..oplog.replay import replay
        from . import pitr

        self.plan = await pitr.since(self.engine.storage, self.engine.info)
        if self.plan is None:
            return
        self.plan = await pitr.unlock(self.engine.storage, self.plan, self.keys)
        into = {f"{self.database}.{s.name}": s.temp for s in staged}
        for collection in staged:
            collection.changed = True  # from the first entry sent on
        try:
            self.report = await replay(
                self.engine.target,
                pitr.entries(self.engine, self.plan),
                namespaces=set(into),
                collections=into,
                before_loss=True,
            )
        except (ArchiveError, ReplayError) as exc:
            self.error = exc
