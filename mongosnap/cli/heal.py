"""``mongosnap heal DEST HOST DATABASE COLL [COLL ...]``: the legacy healer's shape."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any, TextIO

from .._errors import HealIncomplete, UsageError
from ..pipelines.heal import DEFAULT_DEPTH, HealReport, heal
from ._common import (
    MAX_WORKERS,
    add_s3_flags,
    add_source_flags,
    collection_name,
    database_name,
    s3_config,
    seconds,
    whole,
)

log = logging.getLogger("mongosnap.heal")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "heal",
        help="restore watched collections that have vanished",
        description=(
            "Check which watched collections have vanished from DATABASE and restore "
            "each from the newest archive that holds it. Existing collections are "
            "never touched."
        ),
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("host", metavar="HOST", help="host[:port], or the database with --uri")
    p.add_argument("names", metavar="DATABASE COLL", nargs="+", help="database, then collections")
    p.add_argument(
        "--depth",
        type=whole(1),
        default=DEFAULT_DEPTH,
        help="newest archives holding DATABASE to search (default 3)",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be restored, do nothing")
    p.add_argument(
        "--interval", type=seconds, metavar="SECONDS", help="keep watching: heal every SECONDS"
    )
    p.add_argument(
        "--workers", type=whole(1, MAX_WORKERS), default=4, help="concurrent insert batches"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step to stderr")
    add_source_flags(p)
    add_s3_flags(p)
    p.set_defaults(run=run)


def _target(args: argparse.Namespace) -> tuple[str, str, list[str]]:
    """(source, database, collections) from HOST DATABASE COLL..., or --uri DATABASE COLL..."""
    words = [args.host, *args.names, *args.extra]
    if not args.uri:
        words = words[1:]
    if len(words) < 2:
        raise UsageError("give DATABASE and at least one collection to watch")
    return (args.uri or args.host), database_name(words[0]), [collection_name(w) for w in words[1:]]


async def run(args: argparse.Namespace, out: TextIO) -> int:
    source, database, collections = _target(args)
    if args.depth < 1:
        raise UsageError("--depth must be at least 1")

    async def once() -> HealReport:
        return await heal(
            source,
            args.dest,
            database=database,
            collections=collections,
            depth=args.depth,
            dry_run=args.dry_run,
            workers=args.workers,
            s3=s3_config(args),
            connect_timeout=args.connect_timeout,
            warn=lambda message: print(f"mongosnap: warning: {message}", file=sys.stderr),
        )

    if args.interval is None:
        report = await once()
        _print(report, args, out)
        _raise_if_missing(report)
        return 0
    return await _watch(once, args, out)


async def _watch(once: Any, args: argparse.Namespace, out: TextIO) -> int:
    """One line per cycle until SIGTERM, which ends the watch cleanly (exit 0).

    A cycle interrupted mid-heal drops its staged copies before we stop.
    """
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    try:
        while True:
            try:
                _print(await once(), args, out)
            except UsageError:
                raise
            except Exception as exc:  # a failed cycle is reported; the watch goes on
                print(f"mongosnap: heal cycle failed: {exc}", file=sys.stderr)
            out.flush()
            await asyncio.sleep(args.interval)
    except asyncio.CancelledError:
        print("mongosnap: watch stopped", file=sys.stderr)
        return 0


def _raise_if_missing(report: HealReport) -> None:
    if report.missing:
        raise HealIncomplete(
            f"no backup among the newest archives holds {', '.join(report.missing)}"
        )


def _print(report: HealReport, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        out.write(json.dumps(report.to_dict()) + "\n")
        return
    out.write(summary(report) + "\n")


def summary(report: HealReport) -> str:
    """One line, for a person or a log: what was vanished, restored, missing."""
    if not report.vanished:
        return f"all {len(report.watched)} watched collections of {report.database} are present"
    parts = []
    for outcome in report.restored:
        parts.append(
            f"{outcome.name}: {outcome.status} from {outcome.archive} "
            f"({outcome.documents} documents, {outcome.indexes} indexes, "
            f"{outcome.bytes_fetched / 1e6:.1f} of {outcome.archive_size / 1e6:.1f} MB "
            f"fetched, {outcome.seconds:.1f}s)"
        )
    if report.missing:
        parts.append(f"still missing: {', '.join(report.missing)}")
    verb = "would heal" if report.dry_run else "healed"
    return f"{verb} {report.database}: " + "; ".join(parts)
