"""``mongosnap copy SRC DEST``: a second copy of complete archives (docs/operations.md)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import UsageError
from ._common import (
    add_file_mode_flag,
    add_lock_flags,
    add_output_flags,
    add_s3_flags,
    destination,
    lock_options,
    nonempty,
    region,
    s3_config,
    write_json,
)

if TYPE_CHECKING:
    from ..pipelines.copy import CopyReport
    from ..storage import S3Config


def register(commands: Any) -> None:
    p = commands.add_parser(
        "copy",
        help="copy complete archives to a second destination",
        description="Copy complete archives from SRC to DEST (another bucket, endpoint or a "
        "directory): each archive first, checked at DEST (size, embedded manifest), then its "
        "sidecar, so a half copy never looks complete. Rerun to resume: archives already at "
        "DEST are skipped; nothing is overwritten.",
    )
    p.add_argument("source", metavar="SRC", help="s3://bucket[/prefix] or a directory")
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--latest", action="store_true", help="the newest complete archive (the default)"
    )
    which.add_argument(
        "--since",
        metavar="TIME",
        help="every complete archive created at or after TIME (ISO 8601 with zone)",
    )
    which.add_argument("--all", action="store_true", help="every complete archive")
    p.add_argument(
        "--with-oplog", action="store_true", help="also copy the oplog chunks under SRC/oplog/"
    )
    add_s3_flags(p)
    target = p.add_argument_group("S3 of DEST, when it differs from SRC's (default: the same)")
    target.add_argument("--target-endpoint-url", help="DEST's S3-compatible endpoint")
    target.add_argument("--target-region", type=region, help="DEST's bucket region")
    target.add_argument("--target-profile", type=nonempty, help="DEST's AWS profile")
    add_lock_flags(p, "what is written at DEST")
    add_file_mode_flag(p)
    add_output_flags(p)
    p.set_defaults(run=run)


def _select(args: argparse.Namespace) -> str | datetime:
    if args.all:
        return "all"
    if args.since is None:
        return "latest"
    try:
        when = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise UsageError(
            f"--since takes ISO 8601 with a zone (2026-12-01T00:00:00Z), not {args.since!r}"
        )
    return when


def _target_s3(args: argparse.Namespace, source: S3Config) -> S3Config:
    changed: dict[str, Any] = {
        name: value
        for name, value in (
            ("endpoint_url", args.target_endpoint_url),
            ("region", args.target_region),
            ("profile", args.target_profile),
        )
        if value is not None
    }
    if not changed:
        return source
    # Other credentials go with another endpoint: the target's profile or chain.
    keys: dict[str, Any] = {"access_key_id": None, "secret_access_key": None, "session_token": None}
    return replace(source, **keys, **changed)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..pipelines.copy import copy  # imported on use: keeps --help fast

    if args.extra:
        raise UsageError(f"unexpected arguments: {' '.join(args.extra)}")
    select = _select(args)
    locking = lock_options(args)
    source_s3 = s3_config(args)
    report = await copy(
        args.source,
        destination(args),
        select=select,
        with_oplog=args.with_oplog,
        s3=source_s3,
        target_s3=_target_s3(args, source_s3),
        **locking,
    )
    if args.json:
        write_json(report.to_dict(), out)
    elif not args.quiet:
        _print(report, out)
    return 0


def _print(report: CopyReport, out: TextIO) -> None:
    from ..units import count, plural, size

    for item in report.archives:
        what = {"skipped": "skipped (already at the target)", "completed": "completed"}
        out.write(f"{what.get(item.outcome, item.outcome):<32}  {item.key}\n")
    out.write(
        f"copied {plural(len(report.copied), 'archive')} ({size(report.bytes_copied)}), "
        f"skipped {count(len(report.skipped))}: {report.source} -> {report.target}\n"
    )
    if report.oplog_copied or report.oplog_skipped:
        out.write(
            f"oplog: copied {plural(len(report.oplog_copied), 'object')}, "
            f"skipped {count(report.oplog_skipped)}\n"
        )
