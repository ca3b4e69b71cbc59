"""The ``mongosnap`` command: argument parsing, display and exit codes only.

Every command maps to one library call; errors from the library's tree become
one line on stderr and the error's exit code (docs/cli.md lists them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TextIO, cast

from .._errors import HungUp, Interrupted, MongosnapError, Terminated, UsageError, all_errors
from .._redact import uri_secrets
from .._version import __version__

# Command modules import their pipelines (pymongo, aiobotocore, rich) only when
# they run, so --version and --help answer without loading them.
from . import (
    _logging,
    backup,
    check,
    copy,
    diff,
    drill,
    heal,
    oplog,
    prune,
    rekey,
    restore,
    undo,
    verify,
)
from . import list as listing
from ._common import resolve_uri

# One module per command, each with register(subparsers); the order is --help's.
COMMANDS = [
    backup,
    heal,
    restore,
    undo,
    listing,
    verify,
    prune,
    check,
    drill,
    diff,
    oplog,
    copy,
    rekey,
]

EXIT_INTERNAL = 70
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for `cmd | head`
_STOPPING = (signal.SIGTERM, signal.SIGHUP)

log = logging.getLogger("mongosnap")


class Redactor:
    """Removes every credential the command line holds (in a URI, a
    ``user:password@host``, a secret URI option) from text about to be shown."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.secrets: list[str] = []
        for arg in argv:
            self.add(arg)

    def add(self, text: str | None) -> None:
        """Also redact the credentials of ``text`` (a URI read from a file or the environment)."""
        if text and ("@" in text or "?" in text):
            found = set(self.secrets) | uri_secrets(text)
            self.secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class _RedactedOutput(io.TextIOBase):
    """stdout with every credential of the command line replaced by ``***``:
    every field of every --json object and every result line, whatever put
    the credential there (a destination echoed back, a library message)."""

    def __init__(self, out: TextIO, redact: Redactor) -> None:
        super().__init__()
        self._out, self._redact = out, redact

    def write(self, text: str) -> int:
        self._out.write(self._redact(text))
        return len(text)

    def flush(self) -> None:
        if not self._out.closed:  # also called when this wrapper is collected
            self._out.flush()

    def fileno(self) -> int:
        return self._out.fileno()

    def isatty(self) -> bool:
        return self._out.isatty()


class _Withheld(io.TextIOBase):
    """stdout under -q: nothing is shown unless the run fails, then its last
    ``LIMIT`` characters (a watch's cycles would otherwise pile up)."""

    LIMIT = 1 << 16

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self._out, self._text = out, ""

    def write(self, text: str) -> int:
        self._text = (self._text + text)[-self.LIMIT :]
        return len(text)

    def release(self) -> None:
        text, self._text = self._text, ""
        with contextlib.suppress(OSError, ValueError):
            self._out.write(text)
            self._out.flush()

    def fileno(self) -> int:
        return self._out.fileno()

    def isatty(self) -> bool:
        return self._out.isatty()


class _ParseError(Exception):
    """argparse's complaint, raised instead of exiting so --json can report it too."""


class _Parser(argparse.ArgumentParser):
    """argparse, raising instead of exiting, its messages (which quote arguments) redacted."""

    redact: Callable[[str], str] = staticmethod(lambda text: text)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise _ParseError(f"{self.prog}: error: {_Parser.redact(message)}")


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
        epilog="Exit codes: "
        + ", ".join(
            f"{e.exit_code} {e.__name__}" for e in sorted(all_errors(), key=lambda e: e.exit_code)
        ),
    )
    parser.add_argument("-V", "--version", action="version", version=f"mongosnap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def _configure_logging(args: argparse.Namespace, redact: Redactor) -> logging.Handler:
    """-q/-v/-vv and --log-format; timestamps for long runs (watching, or -v);
    every line redacted, Python warnings included."""
    verbose = int(getattr(args, "verbose", 0) or 0)
    handler = _logging.configure(
        verbose=verbose,
        quiet=bool(getattr(args, "quiet", False)),
        fmt=getattr(args, "log_format", "text"),
        timestamps=getattr(args, "interval", None) is not None or verbose > 0,
    )
    handler.addFilter(_RedactingFilter(redact))
    logging.captureWarnings(True)
    return handler


def _aftermath(args: argparse.Namespace) -> str:
    """What an interrupted command left behind; a command that can know sets ``aftermath``."""
    statement: Callable[[], str] | None = getattr(args, "aftermath", None)
    return statement() if statement is not None else "nothing was left behind"


async def _with_signals(work: Awaitable[int], aftermath: Callable[[], str]) -> int:
    """Run work; SIGTERM and SIGHUP cancel it like Ctrl-C does, so cleanup always runs.

    SIGHUP (a terminal closed, an ssh session dropped) would otherwise kill
    the process at once, leaving staging copies and unfinished uploads.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        task.cancel()

    for signum in _STOPPING:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await task
    except asyncio.CancelledError:
        if received:
            error = HungUp if received[0] == signal.SIGHUP else Terminated
            raise error(f"terminated ({received[0].name}); {aftermath()}") from None
        raise
    finally:
        for signum in _STOPPING:
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    # not list(): the `list` command module shadows the builtin in this package
    words = [*(sys.argv[1:] if argv is None else argv)]
    redact = Redactor(words)
    out = cast(TextIO, _RedactedOutput(out or sys.stdout, redact))
    _Parser.redact = redact
    parser = build_parser()
    try:
        args = _parse(parser, words)
    except _ParseError as exc:
        print(exc, file=sys.stderr)
        _json_error(out, words, "UsageError", UsageError.exit_code, str(exc))
        return UsageError.exit_code
    handler = _configure_logging(args, redact)
    if not (getattr(args, "quiet", False) and not getattr(args, "json", False)):
        return _execute(args, words, out, redact, handler)
    held = _Withheld(out)
    code = _execute(args, words, cast(TextIO, held), redact, handler)
    if code != 0:  # -q: a failed run's report is still shown
        held.release()
    return code


def _execute(
    args: argparse.Namespace,
    words: Sequence[str],
    out: TextIO,
    redact: Redactor,
    handler: logging.Handler,
) -> int:
    runner: Callable[[argparse.Namespace, TextIO], Awaitable[int]] = args.run
    try:
        resolve_uri(args)
        redact.add(getattr(args, "uri", None))  # from --uri-file or $MONGOSNAP_URI too
        import asyncio  # here: half of the command line's own import time

        return asyncio.run(_with_signals(runner(args, out), lambda: _aftermath(args)))
    except BrokenPipeError:
        return _output_closed(out)
    except KeyboardInterrupt:
        _last_line(handler, f"interrupted; {_aftermath(args)}", "mongosnap: ")
        _json_error(out, words, "Interrupted", Interrupted.exit_code, "interrupted")
        return Interrupted.exit_code
    except (Terminated, HungUp) as exc:
        if not getattr(args, "stop_is_clean", False):
            return _failed(exc, handler, out, words, redact)
        # A long-running command's normal end (systemctl stop): no error, the code says why.
        logging.getLogger(_logging.STOP_LOGGER).info("%s", redact(str(exc)))
        return exc.exit_code
    except MongosnapError as exc:
        return _failed(exc, handler, out, words, redact)
    except Exception as exc:  # a bug: say so in one line, trace only on request
        if os.environ.get("MONGOSNAP_DEBUG"):
            raise
        message = f"{type(exc).__name__}: {redact(str(exc))}"
        _last_line(
            handler,
            f"internal error: {message} (set MONGOSNAP_DEBUG=1 for a traceback)",
            "mongosnap: ",
        )
        _json_error(out, words, "InternalError", EXIT_INTERNAL, message)
        return EXIT_INTERNAL


def _failed(
    exc: MongosnapError,
    handler: logging.Handler,
    out: TextIO,
    words: Sequence[str],
    redact: Redactor,
) -> int:
    message = redact(str(exc))
    if isinstance(out, _Withheld):  # -q: the report first, as without it
        out.release()
    _last_line(handler, message, "mongosnap: error: ")
    _json_error(out, words, type(exc).__name__, exc.exit_code, message)
    return exc.exit_code


def _last_line(handler: logging.Handler, message: str, text_prefix: str) -> None:
    """The fatal line, shaped as every log line is with --log-format json; as
    ``mongosnap: ...`` text otherwise (no timestamp: it is what a cron mail shows)."""
    if isinstance(handler.formatter, _logging.JsonFormatter):
        record = logging.LogRecord("mongosnap", logging.ERROR, __file__, 0, message, None, None)
        _tell(handler.format(record))
    else:
        _tell(text_prefix + message)


def _tell(line: str) -> None:
    """The last line on stderr; gone with the terminal (SIGHUP: EIO), the exit code says it."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr)


def _parse(parser: argparse.ArgumentParser, words: Sequence[str]) -> argparse.Namespace:
    # Positionals may come after options (`backup DEST --uri URI DB`): argparse
    # leaves those over, and they are taken back here in order.
    args, extra = parser.parse_known_args(words)
    if any(e.startswith("-") for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return args


def _json_error(out: TextIO, words: Sequence[str], kind: str, code: int, message: str) -> None:
    """With --json, the error as one JSON object on stdout too (docs/cli.md)."""
    if "--json" not in words:
        return
    error = {"type": kind, "exit_code": code, "message": message}
    try:
        out.write(json.dumps({"error": error}, separators=(",", ":")) + "\n")
        out.flush()
    except BrokenPipeError:
        _output_closed(out)  # the exit code already tells the error


def _output_closed(out: TextIO) -> int:
    """Whoever read stdout stopped (``| head``): no traceback, no complaint, exit 141
    as a process killed by SIGPIPE would. Whatever the command did is done."""
    with contextlib.suppress(OSError, ValueError):
        # Later writes and the interpreter's final flush must not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    return EXIT_OUTPUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
