"""``mongosnap diff DEST [HOST] DATABASE A B``: what changed between two archives, or live."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import Differs, UsageError
from ._common import (
    add_key_flags,
    add_output_flags,
    add_s3_flags,
    add_source_flags,
    database_name,
    keys,
    s3_config,
    write_json,
)

if TYPE_CHECKING:
    from ..pipelines.diff import CollectionDiff, DiffReport


def register(commands: Any) -> None:
    p = commands.add_parser(
        "diff",
        help="compare a database in two archives, or an archive and the live database",
        usage="%(prog)s [options] DEST [HOST] DATABASE A B\n"
        "       %(prog)s [options] --uri URI DEST DATABASE A B",
        description=(
            "Compare DATABASE on side A and side B: each an archive key at DEST, "
            "'latest', or 'live' (DATABASE on HOST, which only 'live' needs). Per "
            "collection: counts, sizes, indexes, options, documents inserted, deleted "
            "and updated, and the _id ranges that differ. Writes nothing. Exit 0 when "
            "the sides hold the same, 46 when they differ."
        ),
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("words", metavar="[HOST] DATABASE A B", nargs="+", help=argparse.SUPPRESS)
    add_source_flags(p)
    add_key_flags(p)
    add_s3_flags(p, writes=False)
    add_output_flags(p)
    p.set_defaults(run=run)


def _sides(args: argparse.Namespace) -> tuple[str | None, str, str, str]:
    """(source, database, A, B): HOST is there when four words are."""
    words = [*args.words, *args.extra]
    if len(words) == 4 and not args.uri:
        host, *words = words
    elif len(words) == 3:
        host = args.uri
    elif len(words) == 4:
        raise UsageError("give either HOST or --uri, not both")
    else:
        raise UsageError("give [HOST] DATABASE A B")
    return host, database_name(words[0]), words[1], words[2]


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..pipelines.diff import diff

    source, database, a, b = _sides(args)
    report = await diff(
        args.dest,
        a,
        b,
        database=database,
        source=source,
        s3=s3_config(args),
        connect_timeout=args.connect_timeout,
        keys=keys(args),
    )
    _print(report, args, out)
    if not report.same:
        names = ", ".join(c.name for c in report.differing)
        raise Differs(f"{database} differs between {report.a} and {report.b}: {names}")
    return 0


def _print(report: DiffReport, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        write_json(report.to_dict(), out)
        return
    if report.same:
        out.write(f"{report.database}: {report.a} and {report.b} hold the same\n")
        return
    out.write(f"{report.database}: {report.a} -> {report.b}\n")
    for item in report.differing:
        out.write(_line(item) + "\n")


def _line(item: CollectionDiff) -> str:
    if item.state != "changed":
        count = item.b_documents if item.state == "added" else item.a_documents
        return f"  {item.name}: {item.state} ({count} documents)"
    parts = [f"{item.a_documents} -> {item.b_documents} documents"]
    for word, n in (("inserted", item.inserted), ("deleted", item.deleted)):
        if n:
            parts.append(f"{n} {word}")
    if item.updated:
        parts.append(f"{item.updated} updated")
    for word, names in (
        ("index added", item.indexes_added),
        ("index removed", item.indexes_removed),
        ("index changed", item.indexes_changed),
    ):
        parts += [f"{word} {n}" for n in names]
    if item.options_changed:
        parts.append("options changed")
    if item.ranges:
        parts.append(f"{len(item.ranges)} _id ranges differ")
    return f"  {item.name}: " + ", ".join(parts)
