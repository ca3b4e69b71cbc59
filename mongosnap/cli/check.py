"""``mongosnap check DEST [DB] --max-age 26h``: is there a fresh, complete backup?

A monitoring probe in the Nagios plugin convention: one line on stdout
(``MONGOSNAP OK - ...|perfdata``) and exit 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN (the check itself could not run). docs/cli.md has the details.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, TextIO

from .. import units
from .._errors import MongosnapError, UsageError
from ._common import add_log_format_flag, add_s3_flags, s3_config, write_json
from ._logging import rfc3339
from .prune import duration

if TYPE_CHECKING:
    from ..catalog import ArchiveInfo
    from ..pipelines.drills import DrillRecord

log = logging.getLogger("mongosnap.check")

DEFAULT_MAX_AGE = "26h"


class Status(Enum):
    """Nagios plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def register(commands: Any) -> None:
    p = commands.add_parser(
        "check",
        help="monitoring probe: is the newest complete archive fresh enough?",
        description="Exit 0 (OK) when the newest complete archive in DEST (holding DB, "
        "if given) is younger than --max-age; 1 WARNING when older than --warn-age; "
        "2 CRITICAL when too old or there is none; 3 UNKNOWN when DEST cannot be read. "
        "Prints one line, Nagios style.",
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("database", metavar="DB", nargs="?", help="only archives holding DB")
    p.add_argument(
        "--max-age",
        type=duration,
        default=duration(DEFAULT_MAX_AGE),
        metavar="DURATION",
        help=f"CRITICAL when older (default {DEFAULT_MAX_AGE}; 30m, 26h, 1d12h)",
    )
    p.add_argument(
        "--warn-age", type=duration, metavar="DURATION", help="WARNING when older than this"
    )
    p.add_argument(
        "--max-drill-age",
        type=duration,
        metavar="DURATION",
        help="also CRITICAL when no restore drill of DB passed within this (e.g. 8d; needs DB)",
    )
    p.add_argument("--prefix", default="", help="only keys starting with this (default: all)")
    p.add_argument(
        "--locked",
        action="store_true",
        help="WARNING unless the newest archive is under S3 Object Lock (the bucket without"
        " Object Lock configuration, the archive without a lock that still holds)",
    )
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing when OK; the line otherwise"
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="log each archive seen")
    add_log_format_flag(p)
    add_s3_flags(p, writes=False)
    p.set_defaults(run=run)


@dataclass
class Verdict:
    """What check found; ``line()`` is what a monitoring system shows."""

    status: Status
    message: str
    destination: str
    database: str | None
    max_age: timedelta
    warn_age: timedelta | None
    archive: ArchiveInfo | None = None
    age: timedelta | None = None
    skipped: list[str] = field(default_factory=list)
    skewed: list[ArchiveInfo] = field(default_factory=list)
    """Complete archives passed over for freshness: their writer's clock ran ahead."""
    error: MongosnapError | None = None
    locked_until: datetime | None = None
    """With --locked: until when the newest archive is locked (None: it is not)."""
    max_drill_age: timedelta | None = None
    drill: DrillRecord | None = None
    """The newest drill that passed within max_drill_age."""
    drill_latest: DrillRecord | None = None
    """The newest drill at all (a failed one, when none passed)."""
    drill_age: timedelta | None = None

    def line(self) -> str:
        text = f"MONGOSNAP {self.status.name} - {self.message}"
        if self.age is not None:
            warn = "" if self.warn_age is None else f"{self.warn_age.total_seconds():.0f}"
            text += (
                f" | age={self.age.total_seconds():.0f}s;{warn};{self.max_age.total_seconds():.0f}"
            )
            if self.archive is not None:
                text += f" size={self.archive.size}B"
            if self.drill_age is not None and self.max_drill_age is not None:
                limit = self.max_drill_age.total_seconds()
                text += f" drill_age={self.drill_age.total_seconds():.0f}s;;{limit:.0f}"
        return text

    def to_dict(self) -> dict[str, Any]:
        info = self.archive
        out: dict[str, Any] = {
            "status": self.status.name,
            "exit_code": self.status.value,
            "message": self.message,
            "destination": self.destination,
            "database": self.database,
            "archive": None if info is None else info.key,
            "created": None if info is None else rfc3339(info.created),
            "size": None if info is None else info.size,
            "age_seconds": None if self.age is None else round(self.age.total_seconds(), 3),
            "max_age_seconds": self.max_age.total_seconds(),
            "warn_age_seconds": None if self.warn_age is None else self.warn_age.total_seconds(),
            "incomplete_skipped": self.skipped,
            "clock_skewed": [{"archive": a.key, "problem": a.skewed} for a in self.skewed],
            "locked_until": None if self.locked_until is None else rfc3339(self.locked_until),
        }
        if self.max_drill_age is not None:
            out["drill"] = self._drill_dict(self.max_drill_age)
        if self.error is not None:
            out["error"] = {
                "type": type(self.error).__name__,
                "exit_code": self.status.value,
                "message": str(self.error),
            }
        return out

    def _drill_dict(self, limit: timedelta) -> dict[str, Any]:
        latest = self.drill_latest
        return {
            "record": None if self.drill is None else self.drill.key,
            "finished": None if self.drill is None else rfc3339(self.drill.finished),
            "age_seconds": None
            if self.drill_age is None
            else round(self.drill_age.total_seconds(), 3),
            "max_age_seconds": limit.total_seconds(),
            "latest": None if latest is None else latest.key,
            "latest_ok": None if latest is None else latest.ok,
        }


async def run(args: argparse.Namespace, out: TextIO) -> int:
    verdict = Verdict(Status.UNKNOWN, "", args.dest, args.database, args.max_age, args.warn_age)
    verdict.max_drill_age = args.max_drill_age
    try:
        if args.extra:
            raise UsageError(f"unexpected arguments: {' '.join(args.extra)}")
        if args.max_drill_age is not None and args.database is None:
            raise UsageError("--max-drill-age needs DB: drill records are kept per database")
        info = await _newest(args, verdict.skipped, verdict.skewed)
        now = datetime.now(UTC)
        _judge(verdict, info, now)
        if args.locked and info is not None:
            await _check_lock(args, verdict, info)
        if args.max_drill_age is not None:
            await _find_drill(args, verdict, now)
            _judge_drill(verdict, now)
    except MongosnapError as exc:  # the probe could not look: UNKNOWN, not CRITICAL
        verdict.status, verdict.error = Status.UNKNOWN, exc
        verdict.message = f"{type(exc).__name__}: {exc}"
    if args.json:
        write_json(verdict.to_dict(), out)
    else:
        out.write(verdict.line() + "\n")
    return verdict.status.value


async def _newest(
    args: argparse.Namespace, skipped: list[str], skewed: list[ArchiveInfo]
) -> ArchiveInfo | None:
    """The newest COMPLETE archive (holding args.database, if given) whose name's
    time can be trusted; None if there is none. Those passed over go to
    ``skipped`` (incomplete) and ``skewed`` (a clock was off)."""
    from ..catalog import ArchiveStatus, newest_archives  # imported on use: fast --help
    from ..storage import open_storage

    storage = open_storage(args.dest, s3=s3_config(args))
    try:
        async with contextlib.aclosing(newest_archives(storage, args.prefix)) as archives:
            async for info in archives:
                log.info("%s: %s %s", info.key, info.status.value, info.problem)
                if info.status is ArchiveStatus.INCOMPLETE:
                    skipped.append(info.key)
                elif info.status is ArchiveStatus.COMPLETE and _holds(info, args.database):
                    if info.dated is None:  # a name that ran ahead cannot say it is fresh
                        return info
                    skewed.append(info)
    finally:
        await storage.aclose()
    return None


async def _check_lock(args: argparse.Namespace, verdict: Verdict, info: ArchiveInfo) -> None:
    """--locked: a WARNING (at least) unless the bucket has Object Lock and the
    newest archive is locked now."""
    from .._errors import LockUnavailable
    from ..storage import open_storage

    storage = open_storage(args.dest, s3=s3_config(args))
    problem = ""
    try:
        check = getattr(storage, "check_lock", None)
        if check is None:
            raise UsageError("--locked needs an s3:// DEST (a directory cannot lock files)")
        try:
            await check()
        except LockUnavailable as exc:
            problem = str(exc)
        until = (await storage.stat(info.key)).retain_until
    finally:
        await storage.aclose()
    if until is None or until <= datetime.now(UTC):
        problem = problem or f"{info.key} is not locked (backup --lock-days locks archives)"
    else:
        verdict.locked_until = until
    if problem:
        verdict.message += f"; {problem}"
        if verdict.status is Status.OK:
            verdict.status = Status.WARNING
    elif until is not None:
        verdict.message += f"; locked until {rfc3339(until)}"


def _holds(info: ArchiveInfo, database: str | None) -> bool:
    return database is None or (info.databases is not None and database in info.databases)


def _judge(verdict: Verdict, info: ArchiveInfo | None, now: datetime) -> None:
    what = "archive" if verdict.database is None else f"archive of {verdict.database}"
    if info is None:
        verdict.status = Status.CRITICAL
        verdict.message = f"no complete {what} in {verdict.destination}"
        if verdict.skipped:
            verdict.message += f" ({units.count(len(verdict.skipped))} incomplete)"
        verdict.message += _clock_note(verdict)
        return
    verdict.archive, verdict.age = info, max(now - info.created, timedelta(0))
    if verdict.age > verdict.max_age:
        verdict.status = Status.CRITICAL
    elif verdict.warn_age is not None and verdict.age > verdict.warn_age:
        verdict.status = Status.WARNING
    else:
        verdict.status = Status.OK
    manifest = info.manifest
    contents = (
        ""
        if manifest is None
        else (
            f", {units.plural(len(manifest.collections), 'collection')}, "
            f"{units.plural(sum(c.documents for c in manifest.collections), 'document')}"
        )
    )
    verdict.message = (
        f"newest complete {what} is {units.duration(verdict.age)} old "
        f"(limit {units.duration(verdict.max_age)}): {info.key} ({rfc3339(info.created)}{contents})"
    )
    if verdict.skipped:
        verdict.message += f"; {units.count(len(verdict.skipped))} newer incomplete"
    if verdict.skewed and verdict.status is Status.OK:
        verdict.status = Status.WARNING  # a backup host's clock is off: someone should look
    verdict.message += _clock_note(verdict)


def _clock_note(verdict: Verdict) -> str:
    """Why newer complete archives did not count: their writer's clock was off."""
    if not verdict.skewed:
        return ""
    first = verdict.skewed[0]
    return (
        f"; not counted, their time cannot be trusted: "
        f"{units.plural(len(verdict.skewed), 'complete archive')} ({first.key}: {first.skewed})"
    )


async def _find_drill(args: argparse.Namespace, verdict: Verdict, now: datetime) -> None:
    """The newest passed drill record within --max-drill-age (drills.py)."""
    from ..pipelines.drills import newest_passed
    from ..storage import open_storage

    assert verdict.max_drill_age is not None
    storage = open_storage(args.dest, s3=s3_config(args))
    try:
        found = await newest_passed(storage, args.database, now - verdict.max_drill_age)
    finally:
        await storage.aclose()
    verdict.drill, verdict.drill_latest = found


def _judge_drill(verdict: Verdict, now: datetime) -> None:
    """CRITICAL when no drill passed within --max-drill-age, whatever the backups say."""
    limit = verdict.max_drill_age
    assert limit is not None
    passed = verdict.drill
    if passed is not None:
        verdict.drill_age = max(now - passed.finished, timedelta(0))
        verdict.message += (
            f"; last passed drill {units.duration(verdict.drill_age)} old "
            f"(limit {units.duration(limit)})"
        )
        return
    verdict.status = Status.CRITICAL
    latest = verdict.drill_latest
    verdict.message += f"; no restore drill passed within {units.duration(limit)}"
    if latest is not None:
        state = "passed" if latest.ok else "failed"
        verdict.message += f" (newest drill {state}, {rfc3339(latest.finished)}: {latest.key})"
