"""Retention: delete the archives no keep rule asks for.

The rules apply per database: for each database, to the COMPLETE and LEGACY
archives that hold it, newest first:

``keep_last``    the N newest
``keep_within``  those created within that long of the database's newest
                 archive (not of the clock, so a backup job that stopped never
                 lets prune empty the destination)
``keep_daily``   the newest of each of the N most recent days that have one (UTC)

"Newest" and "created" go by ``ArchiveInfo.when``: an archive whose name its
writer's clock put in the future counts at the time the storage wrote it, so
it never outranks, nor pushes out of ``keep_within``, the archives after it.

and each database's newest COMPLETE archive is never deleted, whatever the
rules say. An archive is kept when any of its databases' rules keeps it, so
an archive of database A never stands in for a copy of database B.
Archives in which no database is found form one group of their own.

Only an archive whose state is known may be deleted. One whose sidecar could
not be read or did not parse, or a legacy archive whose databases could not
be learned, is kept and reported (``PruneReport.unknown``). INCOMPLETE
archives of known state (a sidecar that names another archive or size, or
none at all) are deleted when they are older than the newest COMPLETE
archive of each of their databases (of every database, when theirs are not
known: debris of failed writes or interrupted deletions) and the storage last
wrote them more than ``incomplete_grace`` ago: a backup that started earlier
may be storing its sidecar right now. Other INCOMPLETE ones are left alone.

Deleting runs writing backwards (docs/format.md, section 2): the sidecar goes
first, so the archive stops being trusted, then the archive. An interruption
in between leaves an INCOMPLETE archive, which the next run deletes.

An archive the rules would delete but whose archive or sidecar S3 Object Lock
still protects is kept, "locked until" then (``PruneDecision.locked_until``),
and deleted by the first run after that: prune never asks S3 to delete a
locked object (in a versioned bucket that would only hide it behind a delete
marker). Oplog chunks are treated alike (oplog/retention.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .. import units
from .._errors import UsageError
from ..archive.index import index_key
from ..archive.manifest import manifest_key, sealed_key
from ..catalog import ArchiveInfo, ArchiveStatus, learn_databases, list_archives, order
from ..oplog.position import Ts
from ..oplog.retention import OplogPrune, prune_oplog
from ..storage import S3Config, Storage, opened
from .leftovers import Leftover, remove_stale_leftovers
from .locking import locked_until
from .uploads import abort_stale_uploads

INCOMPLETE_GRACE = timedelta(hours=1)
NO_DATABASE = ""
"""The group of archives in which no database was found."""


@dataclass(frozen=True)
class PruneDecision:
    """One archive: kept (``reasons``: the rules that keep it) or deleted (why)."""

    archive: ArchiveInfo
    keep: bool
    reasons: tuple[str, ...]
    kept_for: tuple[str, ...] = ()
    """The databases whose rules keep it."""
    unknown: str = ""
    """Why its state is unknown (it is kept); empty when it is known."""
    locked_until: datetime | None = None
    """Set when only an S3 Object Lock keeps it: until when the lock holds."""

    def to_dict(self) -> dict[str, Any]:
        databases = self.archive.databases
        return {
            "key": self.archive.key,
            "created": self.archive.created.isoformat(),
            "skewed": self.archive.skewed or None,
            "size": self.archive.size,
            "status": self.archive.status.value,
            "sidecar": self.archive.sidecar.value,
            "databases": None if databases is None else sorted(databases),
            "keep": self.keep,
            "reasons": list(self.reasons),
            "kept_for": list(self.kept_for),
            "unknown": self.unknown or None,
            "locked_until": None if self.locked_until is None else self.locked_until.isoformat(),
        }


@dataclass(frozen=True)
class PruneReport:
    destination: str
    dry_run: bool
    decisions: list[PruneDecision] = field(default_factory=list)
    """Every archive, newest first."""
    stale_uploads_aborted: int = 0
    """Unfinished uploads of failed backups aborted (pipelines/uploads.py)."""
    oplog: OplogPrune = field(default_factory=OplogPrune)
    """Oplog chunks no kept archive needs, deleted (oplog/retention.py)."""
    leftovers_removed: list[Leftover] = field(default_factory=list)
    """Stale orphan sidecars and name claims removed (pipelines/leftovers.py)."""

    @property
    def kept(self) -> list[ArchiveInfo]:
        return [d.archive for d in self.decisions if d.keep]

    @property
    def deleted(self) -> list[ArchiveInfo]:
        """Deleted archives (with ``dry_run``: those that would be)."""
        return [d.archive for d in self.decisions if not d.keep]

    @property
    def unknown(self) -> list[PruneDecision]:
        """Archives kept because their state could not be told (to report)."""
        return [d for d in self.decisions if d.unknown]

    @property
    def locked(self) -> list[PruneDecision]:
        """Archives the rules would delete, kept because a lock still holds them."""
        return [d for d in self.decisions if d.locked_until is not None]

    @property
    def bytes_freed(self) -> int:
        return sum(a.size for a in self.deleted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "dry_run": self.dry_run,
            "kept": len(self.kept),
            "deleted": len(self.deleted),
            "unknown": len(self.unknown),
            "locked": len(self.locked),
            "bytes_freed": self.bytes_freed,
            "archives": [d.to_dict() for d in self.decisions],
            "stale_uploads_aborted": self.stale_uploads_aborted,
            "oplog": self.oplog.to_dict(),
            "leftovers_removed": [x.key for x in self.leftovers_removed],
        }


async def prune(
    destination: str | Storage,
    *,
    keep_last: int | None = None,
    keep_within: timedelta | None = None,
    keep_daily: int | None = None,
    dry_run: bool = False,
    s3: S3Config | None = None,
    incomplete_grace: timedelta = INCOMPLETE_GRACE,
) -> PruneReport:
    """Apply the keep rules (see the module docstring); return every decision.

    Raises UsageError when no keep rule is given or one is negative.
    """
    _check_rules(keep_last, keep_within, keep_daily)
    async with opened(destination, s3) as storage:
        aborted = 0 if dry_run else await abort_stale_uploads(storage)
        archives = await learn_databases(storage, await list_archives(storage))
        now = datetime.now(UTC)
        decisions = plan(archives, keep_last, keep_within, keep_daily, now - incomplete_grace)
        decisions = [await _unless_locked(storage, d, now) for d in decisions]
        if not dry_run:
            for decision in decisions:
                if not decision.keep:
                    await delete_archive(storage, decision.archive)
        points = [p for d in decisions if d.keep and (p := replay_start(d.archive))]
        oplog = await prune_oplog(storage, points, dry_run)
        leftovers = await remove_stale_leftovers(storage, dry_run=dry_run)
        return PruneReport(storage.url, dry_run, decisions, aborted, oplog, leftovers)


def replay_start(info: ArchiveInfo) -> Ts | None:
    """Where a point-in-time replay from this archive would start, if it can.

    Its consistent point; for an archive whose manifest cannot be read now, the
    time it is ordered by (no consistent point comes before it); None for archives
    that have no oplog window, legacy ones included.
    """
    if info.manifest is not None:
        window = info.manifest.oplog
        return None if window is None else Ts(*window.last_ts)
    if info.status is ArchiveStatus.LEGACY:
        return None
    return Ts(int(info.when.timestamp()), 0)


def plan(
    archives: list[ArchiveInfo],
    keep_last: int | None,
    keep_within: timedelta | None,
    keep_daily: int | None,
    written_before: datetime,
) -> list[PruneDecision]:
    """The decision for each archive (newest first); nothing is deleted here.

    Rules apply per database (``ArchiveInfo.databases``); INCOMPLETE archives
    are deleted only if the storage wrote them before ``written_before``.
    """
    ordered = sorted(archives, key=order, reverse=True)
    reasons: dict[str, dict[str, None]] = {a.key: {} for a in ordered}
    kept_for: dict[str, dict[str, None]] = {a.key: {} for a in ordered}
    newest: dict[str, ArchiveInfo] = {}
    for database, group in _by_database(ordered).items():
        for rule, info in _rules(group, keep_last, keep_within, keep_daily):
            reasons[info.key][rule] = None
            kept_for[info.key][database] = None
        complete = next((a for a in group if a.status is ArchiveStatus.COMPLETE), None)
        if complete is not None:
            newest[database] = complete
            reasons[complete.key]["newest complete"] = None
            kept_for[complete.key][database] = None
    return [
        _decide(info, tuple(reasons[info.key]), tuple(kept_for[info.key]), newest, written_before)
        for info in ordered
    ]


async def delete_archive(storage: Storage, info: ArchiveInfo) -> None:
    """Delete the sidecar first, then the archive (docs/format.md, section 2);
    an encrypted archive's clear sidecar, then its sealed one, then the archive;
    the manifest index (if any) after the sidecar (section 18)."""
    await storage.delete(manifest_key(info.key))
    if info.encrypted:
        await storage.delete(sealed_key(info.key))
    else:
        await storage.delete(index_key(info.key))  # missing is not an error
    await storage.delete(info.key)


# ---------------------------------------------------------------- internals


async def _unless_locked(storage: Storage, decision: PruneDecision, now: datetime) -> PruneDecision:
    """A deletion turned into a keep while S3 Object Lock protects the archive
    or its sidecar (one HEAD each, for the archives to delete only)."""
    if decision.keep:
        return decision
    key = decision.archive.key
    until = await locked_until(storage, [manifest_key(key), index_key(key), key], now)
    if until is None:
        return decision
    reasons = (f"locked until {units.iso_utc(until)}", *decision.reasons)
    return replace(decision, keep=True, reasons=reasons, locked_until=until)


def _check_rules(
    keep_last: int | None, keep_within: timedelta | None, keep_daily: int | None
) -> None:
    if keep_last is None and keep_within is None and keep_daily is None:
        raise UsageError("prune needs a keep rule: keep_last, keep_within or keep_daily")
    if (keep_last is not None and keep_last < 0) or (keep_daily is not None and keep_daily < 0):
        raise UsageError("keep_last and keep_daily may not be negative")
    if keep_within is not None and keep_within < timedelta(0):
        raise UsageError("keep_within may not be negative")


def _by_database(ordered: list[ArchiveInfo]) -> dict[str, list[ArchiveInfo]]:
    """Each database's COMPLETE and LEGACY archives (known ones only), newest first."""
    groups: dict[str, list[ArchiveInfo]] = {}
    for info in ordered:
        if not info.trusted or info.databases is None:  # never INCOMPLETE or ARCHIVED
            continue
        for database in sorted(info.databases) or [NO_DATABASE]:
            groups.setdefault(database, []).append(info)
    return groups


def _rules(
    group: list[ArchiveInfo],
    keep_last: int | None,
    keep_within: timedelta | None,
    keep_daily: int | None,
) -> Iterator[tuple[str, ArchiveInfo]]:
    """(rule, archive) for each archive of one database's group a rule keeps."""
    for info in group[: keep_last or 0]:
        yield "keep-last", info
    if keep_within is not None and group:
        for info in group:
            if info.when >= group[0].when - keep_within:
                yield "keep-within", info
    for info in _daily(group, keep_daily or 0):
        yield "keep-daily", info


def _daily(trusted: Iterable[ArchiveInfo], days: int) -> list[ArchiveInfo]:
    """The newest archive of each of the ``days`` most recent days that have one."""
    picked: dict[date, ArchiveInfo] = {}
    for info in trusted:  # newest first, so the first of each day is its newest
        day = info.when.astimezone(UTC).date()
        if day not in picked:
            if len(picked) == days:
                break
            picked[day] = info
    return list(picked.values())


def _decide(
    info: ArchiveInfo,
    keep: tuple[str, ...],
    kept_for: tuple[str, ...],
    newest: dict[str, ArchiveInfo],
    written_before: datetime,
) -> PruneDecision:
    if info.status is ArchiveStatus.ARCHIVED:
        return PruneDecision(info, True, ("archived: cannot be read now, never deleted",))
    if not info.known:
        return _unknown(info, "its state is unknown")
    if info.status is not ArchiveStatus.INCOMPLETE:
        if info.databases is None:
            return _unknown(info, "its databases are unknown")
        return PruneDecision(info, bool(keep), keep or ("no keep rule matches",), kept_for)
    if not _older_than_complete(info, newest):
        return PruneDecision(info, True, ("incomplete, newer than the newest complete archive",))
    if info.modified is not None and info.modified > written_before:
        return PruneDecision(info, True, ("incomplete, written too recently to judge",))
    return PruneDecision(info, False, ("incomplete, older than the newest complete archive",))


def _unknown(info: ArchiveInfo, what: str) -> PruneDecision:
    return PruneDecision(info, True, (f"kept: {what}",), unknown=info.problem or what)


def _older_than_complete(info: ArchiveInfo, newest: dict[str, ArchiveInfo]) -> bool:
    """Whether a newer COMPLETE archive exists for each of its databases (for
    every database when it is not known which it holds)."""
    databases = info.databases or newest.keys()
    if not databases:
        return False
    return all(d in newest and order(info) < order(newest[d]) for d in databases)


__all__ = [
    "INCOMPLETE_GRACE",
    "NO_DATABASE",
    "PruneDecision",
    "PruneReport",
    "delete_archive",
    "plan",
    "prune",
]
