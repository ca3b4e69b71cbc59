"""The legacy scripts' command lines: ``mongosnap-backup`` and ``mongosnap-healer``.

Drop-ins for tsuru's backup.bash and healer.bash, so that an old crontab line
changes only its command name (docs/operations.md, section 3): the same
positional arguments, the usage text and exit 1 when too few are given, exit 0
on success and 1 on any failure with a ``FATAL:`` line on stderr. A signal
(SIGTERM, SIGHUP, Ctrl-C) stops the run cleanly, nothing left half-done, and
exits 143, 129 or 130, as the shell scripts killed by it did.

examples/backup.py and examples/healer.py run these same functions.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import Interrupted, MongosnapError, NoBackupsFound

if TYPE_CHECKING:
    from .pipelines.backup import BackupAftermath
    from .pipelines.ledger import StagingLedger

BACKUP_USAGE = """Usage: {prog} <bucket-path> <host[:port]> <database>

  bucket-path  s3://bucket[/prefix] or a directory
  host[:port]  the MongoDB server
  database     the database to back up"""

HEALER_USAGE = """Usage: {prog} <bucket-path> <host> <database> <collection_1> [... <collection_n>]

  bucket-path  s3://bucket[/prefix] or a directory holding the backups
  host         the MongoDB server (host[:port])
  database     the database to watch
  collection   the collections that must exist"""


async def backup(
    dest: str, host: str, database: str, *, aftermath: BackupAftermath | None = None
) -> int:
    """backup.bash: dump DATABASE from HOST into DEST as ``<time>-mongodb-dump.tar.gz``."""
    from . import backup as run_backup

    print(f"Backing up {database} from {host} to {dest}", flush=True)
    try:
        result = await run_backup(
            f"mongodb://{host}/", dest, database=database, aftermath=aftermath
        )
    except MongosnapError as exc:
        print(f"FATAL: {exc}", file=sys.stderr)
        return 1
    print(
        f"Uploaded {result.archive_key} to {dest} ({len(result.collections)} collections, "
        f"{result.documents} documents, {result.bytes_out} bytes)"
    )
    return 0


async def heal(
    dest: str,
    host: str,
    database: str,
    collections: list[str],
    *,
    ledger: StagingLedger | None = None,
) -> int:
    """healer.bash: restore the watched collections missing from DATABASE.

    Each comes from the newest of the three newest archives in DEST that holds
    it; 0 when nothing is missing afterwards, else 1.
    """
    from . import heal as run_heal

    try:
        report = await run_heal(
            f"mongodb://{host}/", dest, database=database, collections=collections, ledger=ledger
        )
    except NoBackupsFound:
        print("FATAL: no backups found!", file=sys.stderr)
        return 1
    except MongosnapError as exc:
        print(f"FATAL: {exc}", file=sys.stderr)
        return 1
    if not report.vanished:
        print(f"Nothing to heal: all {len(report.watched)} collections of {database} exist.")
        return 0
    for outcome in report.restored:
        if outcome.status != "restored":  # e.g. recreated by an application meanwhile
            print(f"{database}.{outcome.name}: {outcome.status}")
            continue
        print(
            f"Healed {database}.{outcome.name} from {outcome.archive} "
            f"({outcome.documents} documents, {outcome.indexes} indexes)"
        )
    if report.missing:
        print(f"FATAL: no backup holds {', '.join(report.missing)}!", file=sys.stderr)
        return 1
    return 0


def backup_main(argv: Sequence[str] | None = None) -> int:
    """``mongosnap-backup <bucket-path> <host[:port]> <database>``"""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3:
        print(BACKUP_USAGE.format(prog=_prog()))
        return 1
    from .pipelines.backup import BackupAftermath

    aftermath = BackupAftermath()
    dest, host, database = args[:3]  # more words are ignored, as the script did
    return _run(backup(dest, host, database, aftermath=aftermath), aftermath.report)


def healer_main(argv: Sequence[str] | None = None) -> int:
    """``mongosnap-healer <bucket-path> <host> <database> <collection>...``"""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4:
        print(HEALER_USAGE.format(prog=_prog()))
        return 1
    from .pipelines.ledger import StagingLedger

    ledger = StagingLedger()
    dest, host, database, *collections = args
    return _run(heal(dest, host, database, collections, ledger=ledger), ledger.report)


def _prog() -> str:
    return os.path.basename(sys.argv[0]) or "mongosnap-backup"


def _run(work: Coroutine[Any, Any, int], aftermath: Callable[[], str]) -> int:
    """Run a script's coroutine; a signal cancels it so that its cleanup runs."""
    from .cli import _with_signals  # SIGTERM and SIGHUP cancel as Ctrl-C does

    try:
        return asyncio.run(_with_signals(work, aftermath))
    except KeyboardInterrupt:
        print(f"FATAL: interrupted; {aftermath()}", file=sys.stderr)
        return Interrupted.exit_code
    except Interrupted as exc:
        print(f"FATAL: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: one line, and the scripts' failure exit
        print(f"FATAL: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
