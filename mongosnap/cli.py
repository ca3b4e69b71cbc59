"""The ``mongosnap`` command: argument parsing, display and exit codes only.

Every command maps to one library call; errors from the library's tree become
one line on stderr and the error's exit code (docs/cli.md lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from ._errors import Interrupted, MongosnapError, Terminated, UsageError, all_errors
from ._version import __version__
from .display import progress_display
from .pipelines.backup import BackupResult, backup
from .storage import S3Config

EXIT_INTERNAL = 70

log = logging.getLogger("mongosnap")


def _add_s3_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("S3 (standard AWS variables and profiles also apply)")
    group.add_argument("--endpoint-url", help="S3-compatible endpoint (or AWS_ENDPOINT_URL_S3)")
    group.add_argument("--region", help="bucket region")
    group.add_argument("--profile", help="AWS profile from the shared config files")
    group.add_argument(
        "--addressing-style", choices=["auto", "path", "virtual"], help="bucket addressing"
    )
    group.add_argument("--sse", choices=["AES256", "aws:kms"], help="server-side encryption")
    group.add_argument("--sse-kms-key-id", help="KMS key for --sse aws:kms")
    group.add_argument("--storage-class", help="e.g. STANDARD_IA, GLACIER_IR")
    group.add_argument(
        "--checksum",
        choices=["when_supported", "when_required"],
        help="request checksums; default when_required with --endpoint-url, else when_supported",
    )
    group.add_argument("--part-size", type=_mebibytes, help="first multipart part size in MiB")


def _mebibytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of MiB: {text!r}") from None
    if value < 5:
        raise argparse.ArgumentTypeError("S3 parts are at least 5 MiB")
    return value * 1024 * 1024


def _s3_config(args: argparse.Namespace) -> S3Config:
    fields: dict[str, Any] = {
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "profile": args.profile,
        "addressing_style": args.addressing_style,
        "sse": args.sse,
        "sse_kms_key_id": args.sse_kms_key_id,
        "storage_class": args.storage_class,
        "checksum": args.checksum,
        "part_size": args.part_size,
    }
    return S3Config(**{k: v for k, v in fields.items() if v is not None})


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step to stderr")


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", help="MongoDB URI (credentials, TLS, replica sets); replaces HOST")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up on an unreachable server after this long (default 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mongosnap",
        description="Streaming MongoDB backups to S3 or a directory, and healing.",
        epilog="Exit codes: " + ", ".join(f"{e.exit_code} {e.__name__}" for e in all_errors()),
    )
    parser.add_argument("--version", action="version", version=f"mongosnap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    _add_source_flags(p)
    _add_s3_flags(p)
    _add_output_flags(p)
    p.set_defaults(run=_run_backup)
    return parser


def _source_and_databases(args: argparse.Namespace) -> tuple[str, list[str]]:
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


async def _run_backup(args: argparse.Namespace, out: TextIO) -> int:
    source, databases = _source_and_databases(args)
    with progress_display(enabled=_interactive(args)) as on_progress:
        result = await backup(
            source,
            args.dest,
            database=None if args.all_databases else databases,
            include=args.include,
            exclude=args.exclude,
            codec=args.codec,
            s3=_s3_config(args),
            connect_timeout=args.connect_timeout,
            batch_size=args.batch_size,
            progress=on_progress,
        )
    _print_backup(result, args, out)
    return 0


def _interactive(args: argparse.Namespace) -> bool:
    return not (args.quiet or args.json) and sys.stderr.isatty()


def _print_backup(result: BackupResult, args: argparse.Namespace, out: TextIO) -> None:
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


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="mongosnap: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    # botocore at DEBUG prints request headers, Authorization included.
    for noisy in ("botocore", "aiobotocore", "urllib3", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _with_signals(work: Awaitable[int]) -> int:
    """Run work; SIGTERM cancels it like Ctrl-C does, so cleanup always runs."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    terminated = False

    def on_term() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_term)
    try:
        return await task
    except asyncio.CancelledError:
        if terminated:
            raise Terminated("terminated (SIGTERM); nothing was left behind") from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    # Positionals may come after options (`backup DEST --uri URI DB`): argparse
    # leaves those over, and they are taken back here in order.
    args, extra = parser.parse_known_args(argv)
    if any(e.startswith("-") for e in extra) or len(extra) > 1:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    _configure_logging(getattr(args, "verbose", False))
    runner: Callable[[argparse.Namespace, TextIO], Awaitable[int]] = args.run
    try:
        return asyncio.run(_with_signals(runner(args, out or sys.stdout)))
    except KeyboardInterrupt:
        print("mongosnap: interrupted; nothing was left behind", file=sys.stderr)
        return Interrupted.exit_code
    except MongosnapError as exc:
        print(f"mongosnap: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: say so in one line, trace only on request
        if os.environ.get("MONGOSNAP_DEBUG"):
            raise
        print(
            f"mongosnap: internal error: {type(exc).__name__}: {exc} "
            "(set MONGOSNAP_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
