"""``mongosnap drill DEST HOST DATABASE [COLL ...]``: prove the newest archive restores."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import DrillFailed, UsageError
from ._common import (
    MAX_WORKERS,
    add_key_flags,
    add_metrics_flags,
    add_output_flags,
    add_s3_flags,
    add_source_flags,
    collection_name,
    database_name,
    freeze_loaded,
    keys,
    observed,
    s3_config,
    whole,
    write_json,
)

if TYPE_CHECKING:
    from ..pipelines.drill import DrillReport
    from ..pipelines.ledger import StagingLedger
    from ..pipelines.scratch import ScratchState

log = logging.getLogger("mongosnap.drill")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "drill",
        help="restore drill: restore the newest archive into a scratch database and check it",
        usage="%(prog)s [options] DEST HOST DATABASE [COLL ...]\n"
        "       %(prog)s [options] --uri URI DEST DATABASE [COLL ...]",
        description=(
            "Restore the newest complete archive of DATABASE into a scratch database "
            "(DATABASE__drill_<time>, or --scratch-db), check every collection against "
            "the archive, replay the archived oplog, report the times taken, drop the "
            "scratch database and write a drill record under DEST/drills/."
        ),
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("host", metavar="HOST", help="host[:port], or the database with --uri")
    p.add_argument(
        "names", metavar="DATABASE [COLL]", nargs="*", help="the database, then collections"
    )
    p.add_argument(
        "--scratch-db", metavar="NAME", help="restore into NAME (default DATABASE__drill_<time>)"
    )
    p.add_argument(
        "--compare-live",
        action="store_true",
        help="also compare the restored copies with the live collections (drift is reported)",
    )
    p.add_argument(
        "--workers",
        type=whole(1, MAX_WORKERS),
        default=4,
        metavar="N",
        help=f"concurrent insert batches per collection (default 4; 1 to {MAX_WORKERS})",
    )
    add_source_flags(p)
    add_key_flags(p)
    add_s3_flags(p)
    add_output_flags(p)
    add_metrics_flags(p)
    p.set_defaults(run=run)


def _target(args: argparse.Namespace) -> tuple[str, str, list[str]]:
    words = [args.host, *args.names, *args.extra]
    if not args.uri:
        words = words[1:]
    if not words:
        raise UsageError("give DATABASE")
    collections = [collection_name(w) for w in words[1:]]
    return (args.uri or args.host), database_name(words[0]), collections


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..pipelines.drill import drill
    from ..pipelines.ledger import StagingLedger
    from ..pipelines.scratch import ScratchState

    freeze_loaded()
    source, database, collections = _target(args)
    if args.scratch_db is not None:
        database_name(args.scratch_db)
    ledger = StagingLedger()
    state = ScratchState()
    args.aftermath = lambda: _left(ledger, state)
    with observed(args, "drill") as metrics:
        report = await drill(
            source,
            args.dest,
            database=database,
            collections=collections,
            scratch_db=args.scratch_db,
            compare_live=args.compare_live,
            workers=args.workers,
            s3=s3_config(args),
            connect_timeout=args.connect_timeout,
            ledger=ledger,
            state=state,
            warn=log.warning,
            keys=keys(args),
        )
        metrics.record_drill(report)
        _print(report, args, out)
        if not report.ok:
            raise DrillFailed(
                f"drill of {database} from {report.archive_key} failed: "
                + "; ".join(report.failures[:5])
                + (f" and {len(report.failures) - 5} more" if len(report.failures) > 5 else "")
            )
    return 0


def _left(ledger: StagingLedger, state: ScratchState) -> str:
    """What an interrupted drill left: staging copies (none once the scratch
    database is dropped with them) and the scratch database."""
    scratch = state.statement()
    if state.problem is None and not state.claimed:
        return scratch
    return f"{ledger.statement()}; {scratch}"


def _print(report: DrillReport, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        write_json(report.to_dict(), out)
        return
    from ..units import duration, plural

    verdict = "passed" if report.ok else "FAILED"
    documents = sum(c.documents for c in report.collections)
    out.write(
        f"drill {verdict}: {plural(len(report.collections), 'collection')}, "
        f"{plural(documents, 'document')} from {report.archive_key} "
        f"(RPO {duration(report.rpo_seconds)}) restored in {report.rto_seconds:.1f}s (RTO)\n"
    )
    if report.replayed_to is not None:
        entries = plural(report.oplog_replayed, "oplog entry", "oplog entries")
        out.write(f"replayed {entries}, to ts {report.replayed_to}\n")
    for check in report.collections:
        mark = "ok" if check.ok else "FAILED"
        out.write(f"  {check.name}: {mark}, {plural(check.documents, 'document')}, ")
        out.write(f"{check.rto_seconds:.1f}s\n")
    for item in report.drift or []:
        out.write(
            f"  drift {item['name']}: {item['state']} "
            f"({item['a_documents']} restored, {item['b_documents']} live)\n"
        )
