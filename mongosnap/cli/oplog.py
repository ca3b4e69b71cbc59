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
    add_lock_flags,
    add_output_flags,
    add_read_preference_flag,
    add_s3_flags,
    add_source_flags,
    destination,
    encryption,
    host_and_uri,
    lock_options,
    s3_config,
    seconds,
    whole,
    write_json,
)
from ._tripwire import TripwireSetup

if TYPE_CHECKING:
    from ..oplog.chunks import Coverage
    from ..oplog.tripwire import Tripwires
    from ..pipelines.trip_stage import TripStager

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
    add_tripwire_flags(p)
    add_encrypt_flags(p)
    add_read_preference_flag(p)
    add_source_flags(p)
    add_s3_flags(p)
    add_lock_flags(p, "each chunk and its sidecar")
    add_file_mode_flag(p)
    add_output_flags(p)
    p.set_defaults(run=run)


def add_tripwire_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("tripwires (docs/pitr.md, Tripwires)")
    group.add_argument(
        "--tripwire",
        action="append",
        default=[],
        metavar="SPEC",
        help="warn when DB.COLL (or DB.*) sees deletes>N/WINDOW, updates>N/WINDOW or "
        "shrink>PCT%%[/WINDOW] in oplog time; repeatable",
    )
    group.add_argument(
        "--on-trip",
        metavar="COMMAND",
        help="run COMMAND (no shell) when a tripwire trips, details in MONGOSNAP_TRIP_* "
        "variables; one run at a time per rule; its failure is only logged",
    )
    group.add_argument(
        "--stage",
        action="store_true",
        help="when a tripwire trips, publish the pre-images of the documents its window "
        "deleted or changed as DB.COLL_undo_<time> (undo's default mode; never applied), "
        "once the window's chunk is stored; not with encryption",
    )
    group.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write the tripwire metrics to PATH after each trip (node_exporter textfile)",
    )
    group.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve /metrics on PORT while archiving"
    )
    group.add_argument(
        "--metrics-bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address for --metrics-port (default 127.0.0.1)",
    )


def _settle(text: str) -> float:
    """--settle: 0 (off) or seconds as ``seconds`` takes them."""
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..oplog.archiver import list_oplog  # imported on use: keeps --help fast

    if args.list:
        if (
            args.host
            or args.extra
            or args.uri
            or args.tripwire
            or args.on_trip
            or args.stage
            or args.read_preference
        ):
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
    locking = lock_options(args)
    # SIGTERM is how it ends (systemctl stop): an info line and exit 143, not an error
    args.stop_is_clean = True
    args.aftermath = lambda: "archiving stopped; the next start resumes after the last chunk"
    if (args.on_trip or args.metrics_file or args.metrics_port is not None) and not args.tripwire:
        raise UsageError("--on-trip and the metrics flags of oplog need --tripwire")
    if args.stage and not args.tripwire:
        raise UsageError("--stage stages the undo of a tripwire's window: it needs --tripwire")
    if args.stage and encryption(args) is not None:
        raise UsageError(
            "--stage reads the archived oplog, which undo cannot read when it is encrypted "
            "(--encrypt-to, --recipients-file, --passphrase-file, --kms-key-id or "
            "$MONGOSNAP_RECIPIENTS): drop --stage or the encryption"
        )
    watch = TripwireSetup(args)
    if not args.quiet:  # a long-running command: say what it writes (-v: what it reads)
        level = logging.DEBUG if args.verbose else logging.INFO
        logging.getLogger("mongosnap.oplog").setLevel(level)
    async with watch.running() as tripwires:
        await _archive(args, tripwires, watch.stager, locking)
    return 0


async def _archive(
    args: argparse.Namespace,
    tripwires: Tripwires | None,
    stager: TripStager | None,
    locking: dict[str, Any],
) -> None:
    from ..oplog.archiver import archive_oplog

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
        tripwires=tripwires,
        stager=stager,
        **locking,
        encryption=encryption(args),
        read_preference=args.read_preference,
    )


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
