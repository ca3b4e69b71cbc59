"""``mongosnap restore (KEY|latest) DEST HOST DATABASE``: put collections back."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import (
    CollectionBusy,
    CollectionExists,
    MongosnapError,
    PartialFailure,
    UsageError,
)
from ._common import (
    MAX_WORKERS,
    add_key_flags,
    add_metrics_flags,
    add_output_flags,
    add_pattern_flags,
    add_s3_flags,
    add_source_flags,
    collection_name,
    database_name,
    freeze_loaded,
    host_and_uri,
    interactive,
    keys,
    log_outcomes,
    observed,
    s3_config,
    whole,
    write_json,
)

log = logging.getLogger("mongosnap.restore")

if TYPE_CHECKING:
    from ..oplog.position import Ts
    from ..pipelines.ledger import StagingLedger
    from ..pipelines.restore import RestoreReport


def register(commands: Any) -> None:
    p = commands.add_parser(
        "restore",
        help="restore a database (or some collections) from an archive",
        description=(
            "Restore DATABASE from ARCHIVE (a key, or 'latest'). Existing collections "
            "are never overwritten unless --drop; each restored collection appears "
            "complete or not at all."
        ),
    )
    p.add_argument("archive", metavar="ARCHIVE", help="archive key, or 'latest'")
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("host", metavar="HOST", nargs="?", help="host[:port] (omit with --uri)")
    p.add_argument("database", metavar="DATABASE", nargs="?", help="database in the archive")
    p.add_argument(
        "--collection",
        "-c",
        action="append",
        default=[],
        metavar="NAME",
        help="restore only this collection (repeatable; default: all)",
    )
    add_pattern_flags(p, "restore")
    p.add_argument("--to-database", metavar="NAME", help="restore under another database name")
    p.add_argument("--drop", action="store_true", help="replace existing collections")
    p.add_argument(
        "--workers",
        type=whole(1, MAX_WORKERS),
        default=4,
        metavar="N",
        help=f"concurrent insert batches per collection (default 4; 1 to {MAX_WORKERS})",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="restore from an archive listed as incomplete (read without its manifest)",
    )
    p.add_argument(
        "--no-oplog-replay",
        dest="oplog_replay",
        action="store_false",
        help="do not replay the archive's dump/oplog.bson (backup --oplog) after the restore",
    )
    p.add_argument(
        "--users-and-roles",
        action="store_true",
        help="also restore the database's users and roles (backup --users-and-roles) "
        "the server lacks; existing ones are left alone",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--to-time",
        metavar="TIME",
        help="restore to this instant (ISO 8601 with zone, e.g. 2026-12-01T10:00:00Z) "
        "from an archive and the oplog chunks under DEST/oplog/",
    )
    when.add_argument("--to-ts", metavar="SECONDS:INC", help="as --to-time, to an oplog ts")
    add_source_flags(p)
    add_s3_flags(p, writes=False)
    add_key_flags(p)
    add_output_flags(p)
    add_metrics_flags(p)
    p.set_defaults(run=run)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    words = [w for w in (args.host, args.database, *args.extra) if w is not None]
    if args.uri:
        words.insert(0, args.uri)
    if args.uri and len(words) == 3:
        raise host_and_uri(args)
    if len(words) != 2:
        raise UsageError("give HOST (or --uri) and DATABASE")
    return words[0], database_name(words[1])


async def run(args: argparse.Namespace, out: TextIO) -> int:
    # imported on use: keeps --help fast
    from ..pipelines.engine import Status
    from ..pipelines.ledger import StagingLedger

    with observed(args, "restore") as metrics:
        source, database = _target(args)
        if args.to_database is not None:
            database_name(args.to_database)
        for name in args.collection:
            collection_name(name)
        ledger = StagingLedger()
        args.aftermath = ledger.report  # what an interruption says it did and left
        with ledger_in_errors(ledger):
            result = await _restore(args, source, database, ledger)
        log_outcomes(log, result.collections)
        metrics.record_restore(result)
        _print(result, args, out)
        if result.failed:
            causes = "; ".join(f"{c.name} ({c.error})" for c in result.failed)
            raise PartialFailure(f"could not restore {causes}")
        busy = [c.name for c in result.collections if c.status is Status.BUSY]
        if busy:
            raise CollectionBusy(
                f"left untouched because another run is restoring them: {', '.join(busy)}"
            )
        existing = [
            c.name for c in result.collections if c.status in (Status.EXISTS, Status.REAPPEARED)
        ]
        if existing:
            raise CollectionExists(f"left untouched because they exist: {', '.join(existing)}")
    return 0


async def _restore(
    args: argparse.Namespace, source: str, database: str, ledger: StagingLedger
) -> RestoreReport:
    from ..display import progress_display  # imported on use: keeps --help fast
    from ..pipelines.restore import restore

    freeze_loaded()
    with progress_display(enabled=interactive(args)) as on_progress:
        return await restore(
            source,
            args.dest,
            args.archive,
            database=database,
            collections=args.collection,
            include=args.include,
            exclude=args.exclude,
            to_database=args.to_database,
            drop=args.drop,
            workers=args.workers,
            s3=s3_config(args),
            connect_timeout=args.connect_timeout,
            allow_incomplete=args.allow_incomplete,
            warn=log.warning,  # through logging: -q silences it, --log-format shapes it
            ledger=ledger,
            progress=on_progress,
            keys=keys(args),
            oplog_replay=args.oplog_replay,
            to_ts=_to_ts(args),
            users_and_roles=args.users_and_roles,
        )


def _to_ts(args: argparse.Namespace) -> Ts | None:
    from ..oplog.position import Ts
    from ..pipelines.pitr import parse_time

    if args.to_ts is not None:
        return Ts.parse(args.to_ts)
    return None if args.to_time is None else parse_time(args.to_time)


@contextlib.contextmanager
def ledger_in_errors(ledger: StagingLedger) -> Iterator[None]:
    """An error's message also says what the run left, when that is not nothing."""
    try:
        yield
    except MongosnapError as exc:
        if not ledger.clean:
            exc.args = (f"{exc}; {ledger.statement()}",)
        raise


def _print(result: RestoreReport, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        write_json(result.to_dict(), out)
        return
    from ..pipelines.engine import Status
    from ..units import plural, size

    restored = [c for c in result.collections if c.status is Status.RESTORED]
    documents = sum(c.documents for c in restored)
    failed = f", {len(result.failed):,} failed" if result.failed else ""
    out.write(
        f"restored {plural(len(restored), 'collection')}{failed}, "
        f"{plural(documents, 'document')} from "
        f"{result.archive_key} ({size(result.bytes_fetched)} of "
        f"{size(result.archive_size)} fetched) in {result.duration:.1f}s\n"
    )
    if result.restored_to is not None:
        entries = plural(result.oplog_replayed, "oplog entry", "oplog entries")
        out.write(f"replayed {entries}, to ts {result.restored_to}\n")
    if result.users is not None:
        out.write(
            f"users and roles: {len(result.users['restored'])} restored"
            + "".join(f", {name} exists (left alone)" for name in result.users["existing"])
            + "\n"
        )
