"""The ``mongosnap`` command: argument parsing, display and exit codes only.

Every command maps to one library call; errors from the library's tree become
one line on stderr and the error's exit code (docs/cli.md lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

from .._errors import Interrupted, MongosnapError, Terminated, all_errors
from .._version import __version__
from . import backup, heal, list, prune, restore, verify  # `list` is a command module here

# One module per command, each with register(subparsers); the order is --help's.
COMMANDS = [backup, heal, restore, list, verify, prune]

EXIT_INTERNAL = 70

log = logging.getLogger("mongosnap")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mongosnap",
        description="Streaming MongoDB backups to S3 or a directory, and healing.",
        epilog="Exit codes: " + ", ".join(f"{e.exit_code} {e.__name__}" for e in all_errors()),
    )
    parser.add_argument("--version", action="version", version=f"mongosnap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="mongosnap: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    # botocore at DEBUG prints request headers, Authorization included.
    for noisy in ("botocore", "aiobotocore", "urllib3", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _aftermath(args: argparse.Namespace) -> str:
    """What an interrupted command left behind; a command that can know sets ``aftermath``."""
    statement: Callable[[], str] | None = getattr(args, "aftermath", None)
    return statement() if statement is not None else "nothing was left behind"


async def _with_signals(work: Awaitable[int], aftermath: Callable[[], str]) -> int:
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
            raise Terminated(f"terminated (SIGTERM); {aftermath()}") from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    # Positionals may come after options (`backup DEST --uri URI DB`): argparse
    # leaves those over, and they are taken back here in order.
    args, extra = parser.parse_known_args(argv)
    if any(e.startswith("-") for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    _configure_logging(getattr(args, "verbose", False))
    runner: Callable[[argparse.Namespace, TextIO], Awaitable[int]] = args.run
    try:
        return asyncio.run(_with_signals(runner(args, out or sys.stdout), lambda: _aftermath(args)))
    except KeyboardInterrupt:
        print(f"mongosnap: interrupted; {_aftermath(args)}", file=sys.stderr)
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
