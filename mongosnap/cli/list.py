"""``mongosnap list DEST``: the archives a destination holds, newest first;
``--uploads``: its unfinished uploads instead."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from .. import units
from .._errors import UsageError
from ._common import add_output_flags, add_s3_flags, s3_config, write_json
from .oplog import write_coverage

if TYPE_CHECKING:
    from ..catalog import ArchiveInfo
    from ..pipelines.uploads import PendingUpload

COLUMNS = ("time", "key", "size", "status", "collections", "documents")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "list",
        help="list the archives at a destination",
        description="List the archives in DEST, newest first, with their status "
        "(complete, incomplete, legacy, archived) and, for complete ones, their contents. "
        "Only DEST's own level: never what a deeper prefix holds.",
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("--prefix", default="", help="only keys starting with this (default: all)")
    p.add_argument(
        "--uploads",
        action="store_true",
        help="list unfinished uploads (S3 multipart uploads, temporary files) instead: "
        "key, when it was initiated, its age",
    )
    p.add_argument(
        "--leftovers",
        action="store_true",
        help="list what interrupted backups left instead: sidecars without archive, "
        "name claims (prune removes them once stale)",
    )
    add_s3_flags(p, writes=False)
    add_output_flags(p)
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.extra:
        raise UsageError(f"unexpected arguments: {' '.join(args.extra)}")
    from ..catalog import list_archives  # imported on use: keeps --help fast
    from ..oplog.chunks import read_coverage
    from ..pipelines.uploads import pending_uploads
    from ..storage import open_storage

    storage = open_storage(args.dest, s3=s3_config(args))
    if args.leftovers:
        await list_leftovers(storage, args, out)
        return 0
    if args.uploads:
        try:
            uploads = await pending_uploads(storage)
        finally:
            await storage.aclose()
        write_uploads([u for u in uploads if u.key.startswith(args.prefix)], args.json, out)
        return 0
    try:
        archives = await list_archives(storage, args.prefix)
        coverage = None if args.json else await read_coverage(storage)
        leftovers = 0 if args.json else await _count_leftovers(storage, args.prefix)
    finally:
        await storage.aclose()
    if args.json:
        write_json([as_dict(a) for a in archives], out)
        return 0
    out.write(table([_row(a) for a in archives]))
    write_skewed(archives, out)
    if coverage is not None and (
        coverage.chunks or coverage.gaps or coverage.incomplete or coverage.unusable
    ):
        out.write("\noplog (mongosnap oplog DEST --list --json for the details):\n")
        write_coverage(coverage, out)
    if leftovers:
        out.write(
            f"\n{units.plural(leftovers, 'leftover')} of interrupted backups "
            "(orphan sidecars, name claims):"
            " mongosnap list DEST --leftovers\n"
        )
    return 0


async def _count_leftovers(storage: Any, prefix: str) -> int:
    from ..pipelines.leftovers import find_leftovers

    return len(await find_leftovers(storage, prefix))


async def list_leftovers(storage: Any, args: argparse.Namespace, out: TextIO) -> None:
    """``list --leftovers``: orphan sidecars and name claims, and which are stale."""
    from ..pipelines.leftovers import find_leftovers

    try:
        found = await find_leftovers(storage, args.prefix)
    finally:
        await storage.aclose()
    now = datetime.now(UTC)
    if args.json:
        write_json([x.to_dict(now) for x in found], out)
        return
    if not found:
        out.write("no leftovers\n")
        return
    for x in found:
        idle = None if x.last_active is None else now - x.last_active
        note = "  stale: the next prune removes it" if x.stale(now) else ""
        out.write(f"{x.key}  {x.kind}  idle {units.duration(idle)}{note}\n")


def write_uploads(uploads: list[PendingUpload], as_json: bool, out: TextIO) -> None:
    from ..pipelines.uploads import STALE_AFTER

    now = datetime.now(UTC)
    if as_json:
        write_json([u.to_dict(now) for u in uploads], out)
        return
    if not uploads:
        out.write("no unfinished uploads\n")
        return
    rows = [("key", "initiated", "age", "idle", "")]
    for upload in uploads:
        initiated = upload.upload.initiated
        idle = upload.idle(now)
        stale = upload.ours and idle is not None and idle >= STALE_AFTER
        rows.append(
            (
                upload.key,
                "-" if initiated is None else f"{initiated.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                units.duration(upload.age(now)),
                units.duration(idle),
                "stale: the next backup or prune aborts it" if stale else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def as_dict(info: ArchiveInfo) -> dict[str, Any]:
    manifest = info.manifest
    return {
        "key": info.key,
        "created": units.iso_utc(info.created),
        "size": info.size,
        "codec": info.codec,
        "status": info.status.value,
        "problem": info.problem or None,
        "skewed": info.skewed or None,
        "ordered_at": units.iso_utc(info.when),
        "databases": _databases(info),
        "encrypted": info.encrypted,
        "collections": None if manifest is None else len(manifest.collections),
        "documents": None if manifest is None else sum(c.documents for c in manifest.collections),
    }


def _databases(info: ArchiveInfo) -> list[str] | None:
    if info.manifest is not None:
        return list(info.manifest.databases)
    return None if info.clear is None else list(info.clear.databases)  # encrypted: in the clear


def write_skewed(archives: list[ArchiveInfo], out: TextIO) -> None:
    """Under the table: the archives marked ``!``, whose writer's clock was off."""
    skewed = [a for a in archives if a.skewed]
    if not skewed:
        return
    out.write("\n! the time in the name cannot be trusted (docs/format.md, section 2):\n")
    for info in skewed:
        out.write(f"  {info.key}: {info.skewed}\n")


def _row(info: ArchiveInfo) -> tuple[str, ...]:
    manifest = info.manifest
    return (
        f"{info.created:%Y-%m-%d %H:%M:%S}" + ("!" if info.skewed else ""),
        info.key,
        human_size(info.size),
        info.status.value,
        "-" if manifest is None else f"{len(manifest.collections):,}",
        "-" if manifest is None else f"{sum(c.documents for c in manifest.collections):,}",
    )


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows under COLUMNS, aligned; numbers to the right."""
    if not rows:
        return "no archives\n"
    all_rows = [COLUMNS, *rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(COLUMNS))]
    right = {2, 4, 5}
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in all_rows
    ]
    return "\n".join(lines) + "\n"


def human_size(n: int) -> str:
    from ..units import size

    return size(n)
