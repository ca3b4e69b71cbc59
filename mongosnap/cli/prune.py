"""``mongosnap prune DEST --keep-last N ...``: delete archives no keep rule asks for."""

from __future__ import annotations

import argparse
import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import UsageError
from ._common import (
    add_metrics_flags,
    add_output_flags,
    add_s3_flags,
    observed,
    s3_config,
    whole,
    write_json,
)
from .list import human_size

if TYPE_CHECKING:
    from ..pipelines.prune import PruneReport

log = logging.getLogger("mongosnap.prune")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")
MAX_DURATION = timedelta(days=100 * 366)


def register(commands: Any) -> None:
    p = commands.add_parser(
        "prune",
        help="delete old archives by retention rules",
        description="Delete the archives in DEST that no keep rule keeps. The newest "
        "complete archive is always kept; incomplete archives older than it are deleted.",
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("--keep-last", type=count, metavar="N", help="keep the N newest archives")
    p.add_argument(
        "--keep-within",
        type=duration,
        metavar="DURATION",
        help="keep archives created within DURATION of the newest one (30d, 12h, 2w, 1d12h)",
    )
    p.add_argument(
        "--keep-daily", type=count, metavar="N", help="keep the newest archive of each of N days"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    add_s3_flags(p, writes=False)
    add_output_flags(p)
    add_metrics_flags(p)
    p.set_defaults(run=run)


count = whole(0)


def duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s`` or a sum such as ``1d12h``."""
    if not text or _DURATION.sub("", text):
        raise argparse.ArgumentTypeError(f"not a duration such as 30d, 12h or 1d12h: {text!r}")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))
    if seconds > MAX_DURATION.total_seconds():
        raise argparse.ArgumentTypeError(f"longer than {MAX_DURATION.days} days: {text!r}")
    return timedelta(seconds=seconds)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..pipelines.prune import prune  # imported on use: keeps --help fast

    if args.extra:
        raise UsageError(f"unexpected arguments: {' '.join(args.extra)}")
    if args.keep_last is None and args.keep_within is None and args.keep_daily is None:
        raise UsageError("prune needs a keep rule: --keep-last, --keep-within or --keep-daily")
    with observed(args, "prune") as metrics:
        report = await prune(
            args.dest,
            keep_last=args.keep_last,
            keep_within=args.keep_within,
            keep_daily=args.keep_daily,
            dry_run=args.dry_run,
            s3=s3_config(args),
        )
        metrics.record_prune(report)
    for decision in report.decisions:
        log.info("%s: %s", decision.archive.key, ", ".join(decision.reasons))
    if args.json:
        write_json(report.to_dict(), out)
    else:
        _print(report, out)
    for decision in report.decisions:
        if decision.archive.skewed:
            key, why = decision.archive.key, decision.archive.skewed
            log.warning("%s: %s", key, why)
    for decision in report.unknown:
        log.warning("kept %s: %s", decision.archive.key, decision.unknown)
    return 0


def _print(report: PruneReport, out: TextIO) -> None:
    from ..units import count, plural

    width = max((len(d.archive.key) for d in report.decisions), default=0)
    for d in report.decisions:
        action = "keep" if d.keep else ("would delete" if report.dry_run else "deleted")
        out.write(f"{action:<12}  {d.archive.key:<{width}}  {', '.join(d.reasons)}\n")
    verb = "would delete" if report.dry_run else "deleted"
    out.write(
        f"{verb} {plural(len(report.deleted), 'archive')} ({human_size(report.bytes_freed)}), "
        f"kept {count(len(report.kept))}"
        + (f" ({count(len(report.locked))} locked)" if report.locked else "")
        + "\n"
    )
    if report.oplog.chunks or report.oplog.gaps:
        out.write(
            f"{verb} {plural(len(report.oplog.chunks), 'oplog chunk')} no kept archive needs "
            f"({human_size(report.oplog.bytes_freed)}); the archived oplog now starts at "
            f"ts {report.oplog.kept_from}\n"
        )
    if report.oplog.locked:
        out.write(
            f"kept {plural(len(report.oplog.locked), 'oplog object')} no kept archive needs:"
            " locked\n"
        )
    for leftover in report.leftovers_removed:
        verb_left = "would remove" if report.dry_run else "removed"
        out.write(f"{verb_left} the stale {leftover.kind} {leftover.key}\n")
