"""``mongosnap oplog DEST HOST``: archive the oplog continuously; ``--list`` its coverage."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import UsageError
from ._common import (
    add_codec_flag,
    add_encrypt_flags,
    add_file_mode_flag,
    add_output_flags,
    add_s3_flags,
    add_source_flags,
    destination,
    encryption,
    host_and_uri,
    s3_config,
    seconds,
    whole,
    write_json,
)

if TYPE_CHECKING:
    from ..oplog.chunks import Coverage

DEFAULT_INTERVAL = 60.0
"""oplog.archiver's default, repeated here so --help need not import the driver."""


def register(commands: Any) -> None:
    p = commands.add_parser(
        "oplog",
        help="archive the oplog continuously (or --list what is archived)",
        description="Tail local.oplog.rs of HOST and write it to DEST/oplog/ in compressed "
        "chunks, each with a sidecar written last, until SIGTERM or Ctrl-C (the entries "
        "buffered then are written as a last chunk). Resumes after the last complete "
        "chunk; a span the oplog no longer holds is recorded as a gap. With --list, show "
        "the spans DEST covers and its gaps.",
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("host", metavar="HOST", nargs="?", help="host[:port] (omit with --uri)")
    p.add_argument("--list", action="store_true", help="show covered spans and gaps, then exit")
    p.add_argument(
        "--interval",
        type=seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="write a chunk at least this often while entries come (default 60)",
    )
    p.add_argument(
        "--chunk-size",
        type=whole(1, 4096),
        default=16,
        metavar="MIB",
        help="or once this much (default 16, at most 4096)",
    )
    add_codec_flag(p)
    p.add_argument(
        "--settle",
        type=_settle,
        default=None,
        metavar="SECONDS",
        help="hold entries this long for ones that become visible late (default: 5 on "
        "FerretDB, 0 on MongoDB)",
    )
    p.add_argument(
        "--start",
        choices=["oldest", "now"],
        default="oldest",
        help="with no chunk at DEST yet: from the oldest entry (default) or from now",
    )
    p.add_argument(
        "--max-buffer",
        type=whole(1, 65536),
        default=256,
        metavar="MIB",
        help="while DEST cannot be written to, hold up to this much of entries, then stop "
        "reading (default 256; at least --chunk-size)",
    )
    p.add_argument(
        "--retry-max",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="while DEST cannot be written to, retry after 1 s, doubling up to this (default 60)",
    )
    add_encrypt_flags(p)
    add_source_flags(p)
    add_s3_flags(p)
    add_file_mode_flag(p)
    add_output_flags(p)
    p.set_defaults(run=run)


def _settle(text: str) -> float:
    """--settle: 0 (off) or seconds as ``seconds`` takes them."""
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..oplog.archiver import archive_oplog, list_oplog  # imported on use: keeps --help fast

    if args.list:
        if args.host or args.extra or args.uri:
            raise UsageError("--list takes only DEST")
        _print(await list_oplog(args.dest, s3=s3_config(args)), args.json, out)
        return 0
    if args.extra:
        raise UsageError(f"unexpected arguments: {' '.join(args.extra)}")
    if args.host and args.uri:
        raise host_and_uri(args)
    if not args.host and not args.uri:
        raise UsageError("give HOST or --uri (one of them)")
    if args.chunk_size < 1:
        raise UsageError("--chunk-size is at least 1 MiB")
    if args.max_buffer < args.chunk_size:
        raise UsageError("--max-buffer is at least --chunk-size")
    # SIGTERM is how it ends (systemctl stop): an info line and exit 143, not an error
    args.stop_is_clean = True
    args.aftermath = lambda: "archiving stopped; the next start resumes after the last chunk"
    if not args.quiet:  # a long-running command: say what it writes (-v: what it reads)
        level = logging.DEBUG if args.verbose else logging.INFO
        logging.getLogger("mongosnap.oplog").setLevel(level)
    await archive_oplog(
        args.uri or args.host,
        destination(args),
        interval=args.interval,
        max_bytes=args.chunk_size << 20,
        codec=args.codec,
        start=args.start,
        settle=args.settle,
        max_buffer=args.max_buffer << 20,
        retry_delay=min(1.0, args.retry_max),
        retry_max_delay=args.retry_max,
        s3=s3_config(args),
        connect_timeout=args.connect_timeout,
        encryption=encryption(args),
    )
    return 0


def _print(coverage: Coverage, as_json: bool, out: TextIO) -> None:
    if as_json:
        write_json(coverage.to_dict(), out)
        return
    write_coverage(coverage, out)


def write_coverage(coverage: Coverage, out: TextIO) -> None:
    """The covered spans, gaps and incomplete chunks, one line each (also for ``list``)."""
    from ..units import plural

    doc = coverage.to_dict()
    if not doc["spans"]:
        out.write("no oplog chunks\n")
    for span in doc["spans"]:
        out.write(
            f"covered  {span['first_time']} .. {span['last_time']}  "
            f"ts {span['first_ts']} .. {span['last_ts']}  "
            f"{plural(span['chunks'], 'chunk')}, {plural(span['entries'], 'entry', 'entries')}\n"
        )
    for gap in doc["gaps"]:
        out.write(f"GAP      after ts {gap['after']}, before ts {gap['before']}: {gap['reason']}\n")
    for key in doc["incomplete"]:
        out.write(f"incomplete chunk (no sidecar): {key}\n")
    for bad in doc["unusable"]:
        what = "skipped (newer format)" if bad["newer_format"] else "UNUSABLE"
        out.write(f"{what} chunk ts {bad['first_ts']} .. {bad['last_ts']}: {bad['reason']}\n")
