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
from typing import NoReturn, TextIO

from .._errors import Interrupted, MongosnapError, Terminated, all_errors
from .._version import __version__
from ..source import uri_secrets
from . import backup, heal, list, prune, restore, verify  # `list` is a command module here

# One module per command, each with register(subparsers); the order is --help's.
COMMANDS = [backup, heal, restore, list, verify, prune]

EXIT_INTERNAL = 70

log = logging.getLogger("mongosnap")


class Redactor:
    """Removes every credential the command line holds (in a URI, a
    ``user:password@host``, a secret URI option) from text about to be shown."""

    def __init__(self, argv: Sequence[str]) -> None:
        found = {s for arg in argv if "@" in arg or "?" in arg for s in uri_secrets(arg)}
        self.secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, with its error messages (which quote arguments) redacted."""

    redact: Callable[[str], str] = staticmethod(lambda text: text)

    def error(self, message: str) -> NoReturn:
        super().error(_Parser.redact(message))


class _RedactingFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        return True


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mongosnap",
        description="Streaming MongoDB backups to S3 or a directory, and healing.",
        epilog="Exit codes: " + ", ".join(f"{e.exit_code} {e.__name__}" for e in all_errors()),
    )
    parser.add_argument("--version", action="version", version=f"mongosnap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def _configure_logging(verbose: bool, redact: Redactor) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="mongosnap: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)  # Python warnings too go through the redaction
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactingFilter(redact))
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
    redact = Redactor(sys.argv[1:] if argv is None else argv)
    _Parser.redact = redact
    parser = build_parser()
    # Positionals may come after options (`backup DEST --uri URI DB`): argparse
    # leaves those over, and they are taken back here in order.
    args, extra = parser.parse_known_args(argv)
    if any(e.startswith("-") for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    _configure_logging(getattr(args, "verbose", False), redact)
    runner: Callable[[argparse.Namespace, TextIO], Awaitable[int]] = args.run
    try:
        return asyncio.run(_with_signals(runner(args, out or sys.stdout)))
    except KeyboardInterrupt:
        print("mongosnap: interrupted; nothing was left behind", file=sys.stderr)
        return Interrupted.exit_code
    except MongosnapError as exc:
        print(f"mongosnap: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: say so in one line, trace only on request
        if os.environ.get("MONGOSNAP_DEBUG"):
            raise
        print(
            f"mongosnap: internal error: {type(exc).__name__}: {redact(str(exc))} "
            "(set MONGOSNAP_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
