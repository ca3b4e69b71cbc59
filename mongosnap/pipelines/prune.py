"""Retention: delete the archives no keep rule asks for.

COMPLETE and LEGACY archives are kept when any rule keeps them:

``keep_last``    the N newest
``keep_within``  those created within that long of the newest archive (not of
                 the clock, so a backup job that stopped never lets prune
                 empty the destination)
``keep_daily``   the newest of each of the N most recent days that have one (UTC)

and the newest COMPLETE archive is never deleted, whatever the rules say.
INCOMPLETE archives older than the newest COMPLETE one are deleted (debris of
failed writes or interrupted deletions) once the storage last wrote them more
than ``incomplete_grace`` ago: a backup that started earlier may be storing
its sidecar right now. Newer INCOMPLETE ones are left alone.

Deleting runs writing backwards (docs/format.md, section 2): the sidecar goes
first, so the archive stops being trusted, then the archive. An interruption
in between leaves an INCOMPLETE archive, which the next run deletes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .._errors import UsageError
from ..archive.manifest import manifest_key
from ..catalog import ArchiveInfo, ArchiveStatus, list_archives
from ..storage import S3Config, Storage, opened
from .uploads import abort_stale_uploads

INCOMPLETE_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class PruneDecision:
    """One archive: kept (``reasons``: the rules that keep it) or deleted (why)."""

    archive: ArchiveInfo
    keep: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.archive.key,
            "created": self.archive.created.isoformat(),
            "size": self.archive.size,
            "status": self.archive.status.value,
            "keep": self.keep,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class PruneReport:
    destination: str
    dry_run: bool
    decisions: list[PruneDecision] = field(default_factory=list)
    """Every archive, newest first."""
    stale_uploads_aborted: int = 0
    """Unfinished uploads of failed backups aborted (pipelines/uploads.py)."""

    @property
    def kept(self) -> list[ArchiveInfo]:
        return [d.archive for d in self.decisions if d.keep]

    @property
    def deleted(self) -> list[ArchiveInfo]:
        """Deleted archives (with ``dry_run``: those that would be)."""
        return [d.archive for d in self.decisions if not d.keep]

    @property
    def bytes_freed(self) -> int:
        return sum(a.size for a in self.deleted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "dry_run": self.dry_run,
            "kept": len(self.kept),
            "deleted": len(self.deleted),
            "bytes_freed": self.bytes_freed,
            "archives": [d.to_dict() for d in self.decisions],
            "stale_uploads_aborted": self.stale_uploads_aborted,
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
        archives = await list_archives(storage)
        now = datetime.now(UTC)
        decisions = plan(archives, keep_last, keep_within, keep_daily, now - incomplete_grace)
        if not dry_run:
            for decision in decisions:
                if not decision.keep:
                    await delete_archive(storage, decision.archive)
        return PruneReport(storage.url, dry_run, decisions, aborted)


def plan(
    archives: list[ArchiveInfo],
    keep_last: int | None,
    keep_within: timedelta | None,
    keep_daily: int | None,
    written_before: datetime,
) -> list[PruneDecision]:
    """The decision for each archive (newest first); nothing is deleted here.

    INCOMPLETE archives are deleted only if the storage wrote them before
    ``written_before``.
    """
    ordered = sorted(archives, key=lambda a: (a.created, a.key), reverse=True)
    trusted = [a for a in ordered if a.trusted]
    reasons: dict[str, list[str]] = {a.key: [] for a in ordered}
    for info in trusted[: keep_last or 0]:
        reasons[info.key].append("keep-last")
    if keep_within is not None and trusted:
        for info in trusted:
            if info.created >= trusted[0].created - keep_within:
                reasons[info.key].append("keep-within")
    for info in _daily(trusted, keep_daily or 0):
        reasons[info.key].append("keep-daily")
    newest = next((a for a in ordered if a.status is ArchiveStatus.COMPLETE), None)
    if newest is not None:
        reasons[newest.key].append("newest complete")
    return [_decide(info, reasons[info.key], newest, written_before) for info in ordered]


async def delete_archive(storage: Storage, info: ArchiveInfo) -> None:
    """Delete the sidecar first, then the archive (docs/format.md, section 2)."""
    await storage.delete(manifest_key(info.key))
    await storage.delete(info.key)


# ---------------------------------------------------------------- internals


def _check_rules(
    keep_last: int | None, keep_within: timedelta | None, keep_daily: int | None
) -> None:
    if keep_last is None and keep_within is None and keep_daily is None:
        raise UsageError("prune needs a keep rule: keep_last, keep_within or keep_daily")
    if (keep_last is not None and keep_last < 0) or (keep_daily is not None and keep_daily < 0):
        raise UsageError("keep_last and keep_daily may not be negative")
    if keep_within is not None and keep_within < timedelta(0):
        raise UsageError("keep_within may not be negative")


def _daily(trusted: Iterable[ArchiveInfo], days: int) -> list[ArchiveInfo]:
    """The newest archive of each of the ``days`` most recent days that have one."""
    picked: dict[date, ArchiveInfo] = {}
    for info in trusted:  # newest first, so the first of each day is its newest
        day = info.created.astimezone(UTC).date()
        if day not in picked:
            if len(picked) == days:
                break
            picked[day] = info
    return list(picked.values())


def _decide(
    info: ArchiveInfo, keep: list[str], newest: ArchiveInfo | None, written_before: datetime
) -> PruneDecision:
    if info.status is ArchiveStatus.ARCHIVED:
        return PruneDecision(info, True, ("archived: cannot be read now, never deleted",))
    if info.status is not ArchiveStatus.INCOMPLETE:
        return PruneDecision(info, bool(keep), tuple(keep) or ("no keep rule matches",))
    if newest is None or (info.created, info.key) > (newest.created, newest.key):
        return PruneDecision(info, True, ("incomplete, newer than the newest complete archive",))
    if info.modified is not None and info.modified > written_before:
        return PruneDecision(info, True, ("incomplete, written too recently to judge",))
    return PruneDecision(info, False, ("incomplete, older than the newest complete archive",))


__all__ = ["INCOMPLETE_GRACE", "PruneDecision", "PruneReport", "delete_archive", "plan", "prune"]
