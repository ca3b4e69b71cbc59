"""``mongosnap verify ARCHIVE DEST``: check an archive end to end."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import UsageError
from ._common import (
    add_key_flags,
    add_output_flags,
    add_s3_flags,
    interactive,
    keys,
    s3_config,
    write_json,
)

if TYPE_CHECKING:
    from ..pipelines.verify import VerifyReport


def register(commands: Any) -> None:
    p = commands.add_parser(
        "verify",
        help="check an archive end to end",
        description="Read an archive once, check every member (BSON, metadata, checksums, "
        "counts against the manifest) and each collection's byte range on its own. "
        "Exits 0 when it is sound, else with the first problem's code.",
    )
    p.add_argument("archive", metavar="ARCHIVE", help="archive key, or 'latest'")
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    add_s3_flags(p, writes=False)
    add_key_flags(p)
    p.add_argument(
        "--no-decrypt",
        action="store_true",
        help="encrypted archive: check only its ciphertext's size and SHA-256 (no key needed)",
    )
    add_output_flags(p)
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.extra:
        raise UsageError(f"unexpected arguments: {' '.join(args.extra)}")
    from ..display import progress_display  # imported on use: keeps --help fast
    from ..pipelines.verify import verify

    with progress_display(enabled=interactive(args)) as on_progress:
        report = await verify(
            args.dest,
            args.archive,
            s3=s3_config(args),
            progress=on_progress,
            keys=None if args.no_decrypt else keys(args),
            decrypt=not args.no_decrypt,
        )
    if args.json:
        write_json(report.to_dict(), out)
    else:
        out.write(summary(report) + "\n")
    for problem in report.problems:
        print(f"mongosnap: {problem.error.__name__}: {problem.message}", file=sys.stderr)
    return report.exit_code


def summary(report: VerifyReport) -> str:
    from ..units import plural, rate, size

    verdict = "ok" if report.ok else f"FAILED ({plural(len(report.problems), 'problem')})"
    return (
        f"{verdict}: {report.archive} ({report.status.value}): "
        f"{plural(len(report.collections), 'collection')}, "
        f"{plural(report.documents, 'document')}; "
        f"read {size(report.bytes_read)} in {report.duration:.1f}s "
        f"({rate(report.bytes_read, report.duration)})"
    )
