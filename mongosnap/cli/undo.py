"""``mongosnap undo DEST HOST DATABASE COLL --from TIME``: undo a window's writes."""

from __future__ import annotations

import argparse
import logging
import re
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import UsageError
from ._common import (
    add_metrics_flags,
    add_output_flags,
    add_s3_flags,
    add_source_flags,
    collection_name,
    database_name,
    freeze_loaded,
    host_and_uri,
    interactive,
    observed,
    s3_config,
    whole,
    write_json,
)

if TYPE_CHECKING:
    from ..oplog.position import Ts
    from ..pipelines.undo import UndoReport

log = logging.getLogger("mongosnap.undo")
_TS = re.compile(r"\d+:\d+")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "undo",
        help="undo the writes a time window made to one collection",
        usage="%(prog)s [options] DEST HOST DATABASE COLL --from TIME\n"
        "       %(prog)s [options] --uri URI DEST DATABASE COLL --from TIME",
        description=(
            "Find the documents written to DATABASE.COLL between --from and --to in the "
            "archived oplog and their state just before --from (archive + oplog). By "
            "default their previous versions are published as a new collection "
            "COLL_undo_<time>; --apply writes them back into COLL, leaving documents "
            "written again since alone (conflicts) unless --force."
        ),
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("host", metavar="HOST", nargs="?", help="host[:port] (omit with --uri)")
    p.add_argument("database", metavar="DATABASE", nargs="?", help="the database")
    p.add_argument("collection", metavar="COLL", nargs="?", help="the collection")
    p.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="TIME",
        help="first instant of the window: ISO 8601 with zone (from the start of its "
        "second) or an oplog ts SECONDS:INC (inclusive)",
    )
    p.add_argument(
        "--to",
        dest="end",
        metavar="TIME",
        help="last instant (ISO 8601 to the end of its second, or SECONDS:INC, inclusive); "
        "default: the newest archived oplog entry",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true", help="write the pre-images back into COLL")
    mode.add_argument(
        "--dry-run", action="store_true", help="count only (and the conflicts --apply would meet)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --apply: also undo documents written again after the window",
    )
    p.add_argument(
        "--remove-inserted",
        action="store_true",
        help="with --apply: delete the documents the window inserted",
    )
    p.add_argument(
        "--batch-size",
        type=whole(1, 10_000),
        default=100,
        metavar="N",
        help="documents per apply batch and ledger record (default 100)",
    )
    add_source_flags(p)
    add_s3_flags(p, writes=False)
    add_output_flags(p)
    add_metrics_flags(p)
    p.set_defaults(run=run)


def _target(args: argparse.Namespace) -> tuple[str, str, str]:
    words = [w for w in (args.host, args.database, args.collection, *args.extra) if w is not None]
    if args.uri:
        words.insert(0, args.uri)
    if args.uri and len(words) == 4 and args.collection is not None:
        raise host_and_uri(args)
    if len(words) != 3:
        raise UsageError("give HOST (or --uri), DATABASE and COLL")
    return words[0], database_name(words[1]), collection_name(words[2])


def parse_instant(text: str, *, first: bool) -> Ts:
    """``SECONDS:INC``, or an ISO 8601 time: from the start of its second for the
    window's first instant, to its end for the last (as ``--to-time``)."""
    from ..oplog.position import Ts
    from ..pipelines.pitr import parse_time

    if _TS.fullmatch(text):
        return Ts.parse(text)
    ts = parse_time(text)
    return Ts(ts.t, 0) if first else ts


async def run(args: argparse.Namespace, out: TextIO) -> int:
    if (args.force or args.remove_inserted) and not args.apply:
        raise UsageError("--force and --remove-inserted go with --apply")
    with observed(args, "undo") as metrics:
        source, database, collection = _target(args)
        if args.apply:  # what an interruption (SIGTERM, Ctrl-C) says it left
            args.aftermath = lambda: (
                f"the documents written so far are recorded in {database}.mongosnap_undo; "
                "run the same command again to resume"
            )
        start = parse_instant(args.start, first=True)
        end = None if args.end is None else parse_instant(args.end, first=False)
        result = await _undo(args, source, database, collection, start, end)
        metrics.record_undo(result)
        _print(result, args, out)
    return 0


async def _undo(
    args: argparse.Namespace, source: str, database: str, collection: str, start: Ts, end: Ts | None
) -> UndoReport:
    from ..display import progress_display  # imported on use: keeps --help fast
    from ..pipelines.undo import undo

    freeze_loaded()
    mode = "apply" if args.apply else "dry_run" if args.dry_run else "stage"
    with progress_display(enabled=interactive(args) and mode == "apply") as on_progress:
        return await undo(
            source,
            args.dest,
            database=database,
            collection=collection,
            start=start,
            end=end,
            mode=mode,
            force=args.force,
            remove_inserted=args.remove_inserted,
            batch=args.batch_size,
            s3=s3_config(args),
            connect_timeout=args.connect_timeout,
            warn=log.warning,
            progress=on_progress,
        )


def _print(result: UndoReport, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        write_json(result.to_dict(), out)
        return
    from ..units import plural

    where = f"{result.database}.{result.collection}"
    out.write(
        f"{where}: {plural(result.touched, 'document')} written from {result.window_from} "
        f"to {result.window_to}: {result.deleted:,} deleted, {result.updated:,} updated, "
        f"{result.inserted:,} inserted, {result.unchanged:,} unchanged "
        f"(archive {result.archive_key}, consistent at {result.consistent_point})\n"
    )
    if result.staged_collection:
        out.write(f"previous versions published as {result.database}.{result.staged_collection}\n")
    if result.mode != "stage":
        verb = "would restore" if result.mode == "dry_run" else "restored"
        out.write(
            f"{verb} {result.restored:,}, removed {result.removed:,} inserted, kept "
            f"{result.kept_inserted:,} inserted, {result.already:,} already so, "
            f"{plural(result.conflicts, 'conflict')} (left untouched)\n"
        )
