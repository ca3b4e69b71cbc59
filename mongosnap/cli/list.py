"""``mongosnap list DEST``: the archives a destination holds, newest first."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import UsageError
from ._common import add_output_flags, add_s3_flags, s3_config

if TYPE_CHECKING:
    from ..catalog import ArchiveInfo

COLUMNS = ("time", "key", "size", "status", "collections", "documents")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "list",
        help="list the archives at a destination",
        description="List the archives in DEST, newest first, with their status "
        "(complete, incomplete, legacy) and, for complete ones, their contents.",
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("--prefix", default="", help="only keys starting with this")
    add_s3_flags(p)
    add_output_flags(p)
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.extra:
        raise UsageError(f"unexpected arguments: {' '.join(args.extra)}")
    from ..catalog import list_archives  # imported on use: keeps --help fast
    from ..storage import open_storage

    storage = open_storage(args.dest, s3=s3_config(args))
    try:
        archives = await list_archives(storage, args.prefix)
    finally:
        await storage.aclose()
    if args.json:
        json.dump([as_dict(a) for a in archives], out, indent=2)
        out.write("\n")
    else:
        out.write(table([_row(a) for a in archives]))
    return 0


def as_dict(info: ArchiveInfo) -> dict[str, Any]:
    manifest = info.manifest
    return {
        "key": info.key,
        "created": info.created.isoformat().replace("+00:00", "Z"),
        "size": info.size,
        "codec": info.codec,
        "status": info.status.value,
        "problem": info.problem or None,
        "databases": None if manifest is None else list(manifest.databases),
        "collections": None if manifest is None else len(manifest.collections),
        "documents": None if manifest is None else sum(c.documents for c in manifest.collections),
    }


def _row(info: ArchiveInfo) -> tuple[str, ...]:
    manifest = info.manifest
    return (
        f"{info.created:%Y-%m-%d %H:%M:%S}",
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
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
