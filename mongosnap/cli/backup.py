"""``mongosnap backup DEST HOST DATABASE``: the legacy backup script's shape."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from .._errors import UsageError
from ..display import progress_display
from ..pipelines.backup import PARALLEL, BackupResult, backup
from ._common import add_output_flags, add_s3_flags, add_source_flags, interactive, s3_config


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
    p.add_argument("--include", action="append", default=[], metavar="PATTERN")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    p.add_argument("--codec", choices=["gzip", "zstd"], default="gzip")
    p.add_argument("--batch-size", type=int, default=1000, help="documents per server batch")
    p.add_argument(
        "--parallel",
        type=int,
        default=PARALLEL,
        metavar="N",
        help=f"collections read at once, the one being written included (default {PARALLEL})",
    )
    p.add_argument(
        "--oplog",
        action="store_true",
        help="also store the oplog entries written during the dump (dump/oplog.bson), "
        "for mongorestore --oplogReplay",
    )
    add_source_flags(p)
    add_s3_flags(p)
    add_output_flags(p)
    p.set_defaults(run=run)


def source_and_databases(args: argparse.Namespace) -> tuple[str, list[str]]:
    """Sort positionals out: HOST DATABASE, or DATABASE alone with --uri."""
    positionals = [a for a in (args.host, args.database) if a is not None] + args.extra
    if args.uri:
        source = args.uri
        if len(positionals) == 2:
            raise UsageError("give either HOST or --uri, not both")
    elif positionals:
        source = positionals.pop(0)
    else:
        raise UsageError("missing HOST (or --uri)")
    databases = positionals + list(args.db)
    if not databases and not args.all_databases:
        raise UsageError("missing DATABASE (or --all-databases)")
    if databases and args.all_databases:
        raise UsageError("give DATABASE or --all-databases, not both")
    return source, databases


async def run(args: argparse.Namespace, out: TextIO) -> int:
    source, databases = source_and_databases(args)
    with progress_display(enabled=interactive(args)) as on_progress:
        result = await backup(
            source,
            args.dest,
            database=None if args.all_databases else databases,
            include=args.include,
            exclude=args.exclude,
            codec=args.codec,
            s3=s3_config(args),
            connect_timeout=args.connect_timeout,
            batch_size=args.batch_size,
            progress=on_progress,
            oplog=args.oplog,
            parallel=args.parallel,
        )
    _print(result, args, out)
    return 0


def _print(result: BackupResult, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        json.dump(result.to_dict(), out, indent=2)
        out.write("\n")
        return
    rate = result.bytes_in / max(result.duration, 1e-9) / 1e6
    out.write(
        f"backed up {len(result.collections)} collections, {result.documents} documents, "
        f"{result.bytes_in / 1e6:.1f} MB -> {result.bytes_out / 1e6:.1f} MB "
        f"in {result.duration:.1f}s ({rate:.1f} MB/s): {result.destination.rstrip('/')}/"
        f"{result.archive_key}\n"
    )
    if result.oplog is not None:
        last = result.oplog["last_ts"]
        out.write(
            f"oplog: {result.oplog['entries']} entries in dump/oplog.bson, "
            f"consistent at ts {last['t']}:{last['i']}\n"
        )
