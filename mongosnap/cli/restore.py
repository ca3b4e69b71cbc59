"""``mongosnap restore (KEY|latest) DEST HOST DATABASE``: put collections back."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from .._errors import CollectionExists, UsageError
from ..pipelines.restore import RestoreResult, restore
from ._common import (
    MAX_WORKERS,
    add_s3_flags,
    add_source_flags,
    collection_name,
    database_name,
    s3_config,
    whole,
)


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
    p.add_argument("--collection", "-c", action="append", default=[], metavar="NAME")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    p.add_argument("--to-database", metavar="NAME", help="restore under another database name")
    p.add_argument("--drop", action="store_true", help="replace existing collections")
    p.add_argument(
        "--workers", type=whole(1, MAX_WORKERS), default=4, help="concurrent insert batches"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step to stderr")
    add_source_flags(p)
    add_s3_flags(p)
    p.set_defaults(run=run)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    words = [w for w in (args.host, args.database, *args.extra) if w is not None]
    if args.uri:
        words.insert(0, args.uri)
    if len(words) != 2:
        raise UsageError("give HOST (or --uri) and DATABASE")
    return words[0], database_name(words[1])


async def run(args: argparse.Namespace, out: TextIO) -> int:
    source, database = _target(args)
    if args.to_database is not None:
        database_name(args.to_database)
    for name in args.collection:
        collection_name(name)
    result = await restore(
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
    )
    _print(result, args, out)
    existing = [c.name for c in result.collections if c.status != "restored"]
    if existing:
        raise CollectionExists(f"left untouched because they exist: {', '.join(existing)}")
    return 0


def _print(result: RestoreResult, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        out.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    restored = [c for c in result.collections if c.status == "restored"]
    documents = sum(c.documents for c in restored)
    out.write(
        f"restored {len(restored)} collections, {documents} documents from "
        f"{result.archive_key} ({result.bytes_fetched / 1e6:.1f} of "
        f"{result.archive_size / 1e6:.1f} MB fetched) in {result.duration:.1f}s\n"
    )
