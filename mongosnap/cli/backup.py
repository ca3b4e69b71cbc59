"""``mongosnap backup DEST HOST DATABASE``: the legacy backup script's shape."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import PartialFailure, UsageError
from ..progress import Progress, ProgressCallback, Stage, ignore
from ._common import (
    add_codec_flag,
    add_encrypt_flags,
    add_file_mode_flag,
    add_lock_flags,
    add_metrics_flags,
    add_output_flags,
    add_pattern_flags,
    add_read_preference_flag,
    add_s3_flags,
    add_source_flags,
    database_name,
    destination,
    encryption,
    host_and_uri,
    interactive,
    lock_options,
    megabytes_per_second,
    observed,
    s3_config,
    whole,
    write_json,
)

if TYPE_CHECKING:
    from ..pipelines.backup import BackupReport

log = logging.getLogger("mongosnap.backup")
MAX_BATCH = 2**31 - 1
PARALLEL = 2
"""pipelines.backup.PARALLEL, repeated so --help need not import the driver."""
MAX_RANGE_MIB = 1 << 20


def register(commands: Any) -> None:
    p = commands.add_parser(
        "backup",
        help="dump databases into one archive",
        description="Dump a database into DEST as <time>-mongodb-dump.tar.gz, streaming.",
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("host", metavar="HOST", nargs="?", help="host[:port] (omit with --uri)")
    p.add_argument("database", metavar="DATABASE", nargs="?", help="database to back up")
    p.add_argument("--db", action="append", default=[], metavar="NAME", help="another database")
    p.add_argument("--all-databases", action="store_true", help="every non-system database")
    add_pattern_flags(p, "back up")
    add_codec_flag(p)
    p.add_argument(
        "--batch-size",
        type=whole(1, MAX_BATCH),
        default=1000,
        help="documents per server batch (default 1000)",
    )
    p.add_argument(
        "--parallel",
        type=whole(1, 64),
        default=PARALLEL,
        metavar="N",
        help=f"collections read at once, the one being written included (default {PARALLEL})",
    )
    p.add_argument(
        "--range-size",
        type=whole(0, MAX_RANGE_MIB),
        default=0,
        metavar="MIB",
        help="read a collection of at least twice this size as _id ranges of it, "
        "up to --parallel at once (default 0: never)",
    )
    p.add_argument(
        "--oplog",
        action="store_true",
        help="also store the oplog entries written during the dump (dump/oplog.bson), "
        "for mongorestore --oplogReplay",
    )
    add_encrypt_flags(p)
    p.add_argument(
        "--users-and-roles",
        action="store_true",
        help="also store each database's users and roles, as mongodump --dumpDbUsersAndRoles does",
    )
    add_read_preference_flag(p)
    p.add_argument(
        "--max-rate",
        type=megabytes_per_second,
        default=0.0,
        metavar="MB/S",
        help="read at most this many MB (10^6 bytes) per second from the server (default: no cap)",
    )
    add_source_flags(p)
    add_s3_flags(p)
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="DEST2",
        help="write the same archive to DEST2 too, from the same dump (repeatable); "
        "if only DEST2 fails, DEST's archive is kept and the exit code is 42",
    )
    add_lock_flags(p, "the archive and its sidecar")
    add_file_mode_flag(p)
    add_output_flags(p)
    add_metrics_flags(p)
    p.set_defaults(run=run)


def source_and_databases(args: argparse.Namespace) -> tuple[str, list[str]]:
    """Sort positionals out: HOST DATABASE, or DATABASE alone with --uri."""
    positionals = [a for a in (args.host, args.database) if a is not None] + args.extra
    if args.uri:
        source = args.uri
        if len(positionals) == 2:
            raise host_and_uri(args)
    elif positionals:
        source = positionals.pop(0)
    else:
        raise UsageError("missing HOST (or --uri)")
    databases = [database_name(d) for d in positionals + list(args.db)]
    if not databases and not args.all_databases:
        raise UsageError("missing DATABASE (or --all-databases)")
    if databases and args.all_databases:
        raise UsageError("give DATABASE or --all-databases, not both")
    return source, databases


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..display import progress_display  # imported on use: keeps --help fast
    from ..pipelines.backup import BackupAftermath, backup

    aftermath = BackupAftermath()
    args.aftermath = aftermath.report  # what an interruption says is left at DEST
    with observed(args, "backup") as metrics:
        source, databases = source_and_databases(args)
        locking = lock_options(args)
        if locking and any(not str(d).startswith("s3://") for d in args.also):
            raise UsageError("--lock-days needs s3:// destinations (--also included)")
        watched = interactive(args)
        with progress_display(enabled=watched) as on_progress:
            result = await backup(
                source,
                destination(args),
                database=None if args.all_databases else databases,
                include=args.include,
                exclude=args.exclude,
                codec=args.codec,
                s3=s3_config(args),
                connect_timeout=args.connect_timeout,
                batch_size=args.batch_size,
                # ignore: neither drawn nor logged, so no estimates are asked for
                progress=logged(on_progress) if watched or args.verbose else ignore,
                oplog=args.oplog,
                parallel=args.parallel,
                range_size=args.range_size << 20,
                aftermath=aftermath,
                encryption=encryption(args),
                users_and_roles=args.users_and_roles,
                read_preference=args.read_preference,
                max_rate=args.max_rate * 1e6,
                also=args.also,
                **locking,
            )
        metrics.record_backup(result)
    log.info("wrote %s/%s", result.destination.rstrip("/"), result.archive_key)
    _print(result, args, out)
    failed = [m for m in result.also if not m["complete"]]
    if failed:
        raise PartialFailure(
            f"the archive is complete at {result.destination.rstrip('/')}, but not at "
            + "; ".join(f"{m['destination']} ({m['error']})" for m in failed)
        )
    return 0


def _print(result: BackupReport, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        write_json(result.to_dict(), out)
        return
    from ..units import plural, rate, size

    out.write(
        f"backed up {plural(len(result.collections), 'collection')}, "
        f"{plural(result.documents, 'document')}, "
        f"{size(result.bytes_in)} -> {size(result.bytes_out)} "
        f"in {result.duration:.1f}s ({rate(result.bytes_in, result.duration)}): "
        f"{result.destination.rstrip('/')}/"
        f"{result.archive_key}\n"
    )
    if result.users is not None:
        out.write(
            f"users and roles: {plural(result.users['users'], 'user')}, "
            f"{plural(result.users['roles'], 'role')}\n"
        )
    for mirror in result.also:
        if mirror["complete"]:
            out.write(f"also at {mirror['destination'].rstrip('/')}/{result.archive_key}\n")
    if result.oplog is not None:
        last = result.oplog["last_ts"]
        out.write(
            f"oplog: {plural(result.oplog['entries'], 'entry', 'entries')} in dump/oplog.bson, "
            f"consistent at ts {last['t']}:{last['i']}\n"
        )


def logged(display: ProgressCallback) -> ProgressCallback:
    """The display's callback, also logging each collection (-v) and each batch (-vv)."""

    def on_progress(event: Progress) -> None:
        display(event)
        name = f"{event.database}.{event.collection}"
        if event.stage is Stage.PLANNED:
            log.debug("%s: about %s documents", name, event.total_documents)
        elif event.stage is Stage.STARTED:
            log.info("dumping %s", name)
        elif event.stage is Stage.DONE:
            log.info("dumped %s: %s, %s", name, _documents(event), _bytes(event))
        else:
            log.debug("%s: %s, %s so far", name, _documents(event), _bytes(event))

    return on_progress


def _documents(event: Progress) -> str:
    from ..units import plural

    return plural(event.documents, "document")


def _bytes(event: Progress) -> str:
    from ..units import plural

    return plural(event.bytes, "byte")
