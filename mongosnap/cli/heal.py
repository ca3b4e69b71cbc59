"""``mongosnap heal DEST HOST DATABASE COLL [COLL ...]``: the legacy healer's shape."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import CollectionBusy, HealIncomplete, PartialFailure, UsageError
from ..units import count, plural
from ._common import (
    MAX_WORKERS,
    add_key_flags,
    add_metrics_flags,
    add_output_flags,
    add_s3_flags,
    add_source_flags,
    collection_name,
    database_name,
    freeze_loaded,
    interactive,
    keys,
    log_outcomes,
    observed,
    prepared_metrics,
    s3_config,
    seconds,
    whole,
    write_json,
    write_metrics,
)
from ._logging import STOP_LOGGER

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..pipelines.damage import Damage
    from ..pipelines.engine import CollectionOutcome
    from ..pipelines.heal import HealReport
    from ..pipelines.ledger import StagingLedger

log = logging.getLogger("mongosnap.heal")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "heal",
        help="restore watched collections that have vanished",
        usage="%(prog)s [options] DEST HOST DATABASE COLL [COLL ...]\n"
        "       %(prog)s [options] --uri URI DEST DATABASE COLL [COLL ...]",
        description=(
            "Check which watched collections have vanished from DATABASE and restore "
            "each from the newest archive that holds it. Existing collections are "
            "never touched."
        ),
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("host", metavar="HOST", help="host[:port], or the database with --uri")
    p.add_argument(
        "names", metavar="DATABASE COLL", nargs="+", help="the database, then the collections"
    )
    p.add_argument(
        "--depth",
        type=whole(1),
        help="newest archives holding DATABASE to search (default 3)",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be restored, do nothing")
    p.add_argument(
        "--interval", type=seconds, metavar="SECONDS", help="keep watching: heal every SECONDS"
    )
    p.add_argument(
        "--workers",
        type=whole(1, MAX_WORKERS),
        default=4,
        metavar="N",
        help=f"concurrent insert batches per collection (default 4; 1 to {MAX_WORKERS})",
    )
    p.add_argument(
        "--users-and-roles",
        action="store_true",
        help="also put back the database's users and roles the server lacks "
        "(backup --users-and-roles); existing ones are left alone",
    )
    p.add_argument(
        "--shrink-threshold",
        type=_percent,
        metavar="PCT",
        help="a present collection that lost more than PCT%% of the documents the newest "
        "archive counted is damaged (an emptied one always is)",
    )
    p.add_argument(
        "--restore-missing",
        action="store_true",
        help="put back what a damaged collection lost, never replacing a live document: "
        "with the archived oplog, the documents deleted since the archive; otherwise the "
        "archived documents whose _id it lacks. Deliberate deletes since the archive come "
        "back too",
    )
    add_source_flags(p)
    add_s3_flags(p, writes=False)
    add_key_flags(p)
    add_output_flags(p)
    add_metrics_flags(p, serve=True)
    p.set_defaults(run=run)


def _percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"expected a percentage above 0, at most 100, not {text!r}"
        )
    return value


def _target(args: argparse.Namespace) -> tuple[str, str, list[str]]:
    """(source, database, collections) from HOST DATABASE COLL..., or --uri DATABASE COLL..."""
    words = [args.host, *args.names, *args.extra]
    if not args.uri:
        words = words[1:]
    if len(words) < 2:
        raise UsageError("give DATABASE and at least one collection to watch")
    try:
        database = database_name(words[0])
    except UsageError as exc:
        if not args.uri:
            raise
        raise UsageError(f"{exc}; with {args.uri_origin} set, leave HOST out") from None
    return (args.uri or args.host), database, [collection_name(w) for w in words[1:]]


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..display import progress_display  # imported on use: keeps --help fast
    from ..pipelines.heal import DEFAULT_DEPTH, heal
    from ..pipelines.ledger import StagingLedger
    from .restore import ledger_in_errors

    freeze_loaded()
    source, database, collections = _target(args)
    depth = DEFAULT_DEPTH if args.depth is None else args.depth
    if depth < 1:
        raise UsageError("--depth must be at least 1")
    if args.metrics_port is not None and args.interval is None:
        raise UsageError("--metrics-port serves while watching: give --interval too")
    ledger = StagingLedger()
    args.aftermath = ledger.report  # what an interruption says it did and left

    async def once() -> HealReport:
        log.info("checking %s of %s", ", ".join(collections), database)
        with progress_display(enabled=interactive(args)) as on_progress:
            report = await heal(
                source,
                args.dest,
                database=database,
                collections=collections,
                depth=depth,
                dry_run=args.dry_run,
                workers=args.workers,
                s3=s3_config(args),
                connect_timeout=args.connect_timeout,
                warn=log.warning,
                ledger=ledger,
                progress=on_progress,
                keys=keys(args),
                users_and_roles=args.users_and_roles,
                restore_missing=args.restore_missing,
                shrink_threshold=args.shrink_threshold,
            )
        _log_outcomes(report)
        return report

    if args.interval is None:
        with observed(args, "heal") as metrics, ledger_in_errors(ledger):
            report = await once()
            metrics.record_heal(report)
            _print(report, args, out)
            _raise_if_missing(report)
        return 0
    return await _watch(once, args, out, ledger)


async def _watch(
    once: Callable[[], Awaitable[HealReport]],
    args: argparse.Namespace,
    out: TextIO,
    ledger: StagingLedger,
) -> int:
    """One line per cycle until SIGTERM, which ends the watch cleanly (exit 0,
    an info line: stopping a watch is its normal end).

    A cycle interrupted mid-heal drops its staged copies before we stop.
    """
    import asyncio

    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    metrics = prepared_metrics("heal", args.metrics_file)
    with _serving(metrics, args):
        try:
            while True:
                await _cycle(once, metrics, args, out)
                await asyncio.sleep(args.interval)
        except asyncio.CancelledError:
            logging.getLogger(STOP_LOGGER).info("watch stopped; %s", ledger.statement())
            return 0


async def _cycle(
    once: Callable[[], Awaitable[HealReport]],
    metrics: Metrics,
    args: argparse.Namespace,
    out: TextIO,
) -> None:
    """One heal; a failed cycle is logged and counted by kind, and the watch goes on."""
    try:
        with metrics.run():
            report = await once()
            metrics.record_heal(report)
            _print(report, args, out)
            _raise_if_missing(report, busy_fails=False)
    except UsageError:
        raise
    except Exception as exc:
        log.error("heal cycle failed: %s: %s", type(exc).__name__, exc)
    finally:
        out.flush()
        write_metrics(metrics, args.metrics_file, raising=False)


@contextlib.contextmanager
def _serving(metrics: Metrics, args: argparse.Namespace) -> Iterator[None]:
    """Serve /metrics on --metrics-port (bound to --metrics-bind) while watching."""
    if args.metrics_port is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            port = stack.enter_context(metrics.serve(args.metrics_port, args.metrics_bind))
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on port {args.metrics_port}: {exc}") from None
        log.info("serving metrics on http://%s:%d/metrics", args.metrics_bind, port)
        yield


def _log_outcomes(report: HealReport) -> None:
    log_outcomes(log, report.restored)
    for key in report.searched:
        log.debug("searched archive %s", key)


def _raise_if_missing(report: HealReport, *, busy_fails: bool = True) -> None:
    """The exit a one-shot heal's outcome calls for; a watch leaves a busy
    collection to the run healing it and looks again next cycle."""
    if report.failed:
        causes = {f.name: f.error for f in report.failures}
        raise PartialFailure(
            "could not restore "
            + "; ".join(f"{name} ({causes[name]})" for name in report.failed)
            + _also_missing(report)
        )
    if report.missing:
        raise HealIncomplete(
            f"no backup among the newest archives holds {', '.join(report.missing)}"
        )
    failed = [d for d in report.damaged if d.status == "failed"]
    if failed:
        raise PartialFailure(
            "could not restore the missing documents of "
            + "; ".join(f"{d.name} ({d.error})" for d in failed)
        )
    if report.unrepaired:
        raise HealIncomplete(
            f"damaged: {', '.join(report.unrepaired)}; nothing written (--restore-missing "
            "puts back the documents they lost)"
        )
    if not report.busy:
        return
    message = f"{', '.join(report.busy)}: being healed by another run; left to it"
    if busy_fails:
        raise CollectionBusy(message)
    log.warning("%s (checked again next cycle)", message)


def _also_missing(report: HealReport) -> str:
    others = [c for c in report.missing if c not in report.failed]
    return f"; no searched archive holds {', '.join(others)}" if others else ""


def _print(report: HealReport, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        write_json(report.to_dict(), out)
        return
    out.write(summary(report) + "\n")
    if report.users is not None:
        out.write(
            f"users and roles: {len(report.users['restored'])} restored"
            + "".join(f", {name} exists (left alone)" for name in report.users["existing"])
            + "\n"
        )


def summary(report: HealReport) -> str:
    """For a person or a log: a headline, then one line per vanished collection.

    "healed" only when something was restored; every attempt is listed,
    failures included, then what is still missing. A collection brought past
    its archive by the oplog has a second line saying to when.
    """
    from ..pipelines.engine import Status

    if not report.vanished:
        if len(report.watched) == 1:
            head = f"the watched collection of {report.database} is present"
        else:
            watched = count(len(report.watched))
            head = f"all {watched} watched collections of {report.database} are present"
        return "\n".join([head, *damage_lines(report)])
    done = Status.WOULD_RESTORE if report.dry_run else Status.RESTORED
    restored = [o for o in report.restored if o.status is done]
    if report.dry_run:
        verb = "would heal" if restored else "would not heal"
    else:
        verb = "healed" if restored else "did not heal"
    lines = [
        f"{verb} {report.database}: {count(len(restored))} of "
        f"{plural(len(report.vanished), 'vanished collection')} "
        f"{'would be ' if report.dry_run else ''}restored"
    ]
    replayed = replay_lines(report)
    for outcome in report.restored:
        lines.append(f"  {outcome_line(outcome)}")
        if outcome.name in replayed:
            lines.append(f"    {replayed[outcome.name]}")
    lines += [f"  {f.name}: failed from {f.archive} ({f.error})" for f in report.failures]
    lines += [f"  {name}: still missing" for name in report.missing]
    return "\n".join(lines + damage_lines(report))


def damage_lines(report: HealReport) -> list[str]:
    """One line per damaged collection: what the archive counted, what is left, what was done."""
    lines = []
    for d in report.damaged:
        seen = (
            f"  {d.name}: {d.reason} since {d.archive} "
            f"({count(d.live)} of {plural(d.archived, 'document')} left)"
        )
        if d.status == "restored" and d.source == "oplog":
            done = f"{_undone(d)}; documents deleted on purpose since then came back too"
        elif d.status == "restored":
            done = (
                f"{plural(d.inserted, 'missing document')} restored from the archive (documents "
                f"deleted on purpose since the archive came back too){_fallback(d)}"
            )
        elif d.status == "would restore" and d.source == "oplog":
            done = (
                f"would undo the deletes since {_instant(d.consistent_point or '')}, from the oplog"
            )
        elif d.status == "would restore":
            done = f"would restore the archived documents it lacks{_fallback(d)}"
        elif d.status == "failed":
            done = f"missing documents not restored ({d.error})"
        else:
            done = "DAMAGED, nothing written (--restore-missing puts back what it lacks)"
        lines.append(f"{seen}; {done}")
    return lines


def _undone(d: Damage) -> str:
    """What the oplog repair did: documents back, deleted since when, read up to when."""
    left = d.deleted - d.inserted
    kept = f", {count(left)} already there left alone" if left else ""
    return (
        f"restored {plural(d.inserted, 'document')} deleted since "
        f"{_instant(d.consistent_point or '')}, from the oplog up to "
        f"{_instant(d.oplog_to or '')}{kept}"
    )


def _fallback(d: Damage) -> str:
    return f"; not from the oplog: {d.fallback}" if d.fallback else ""


def replay_lines(report: HealReport) -> dict[str, str]:
    """Per collection the oplog brought forward: up to when, with how many entries.

    One replay serves every collection healed from its archive, so its count
    is shared: the line names the others then.
    """
    lines: dict[str, str] = {}
    for replay in report.replays:
        for name, instant in replay.restored_to.items():
            others = [c for c in replay.collections if c != name]
            shared = f" (shared with {', '.join(others)})" if others else ""
            lines[name] = (
                f"oplog replayed to {_instant(instant)}: "
                f"{plural(replay.entries, 'entry', 'entries')}{shared}"
            )
    return lines


def _instant(text: str) -> str:
    """``SECONDS:INC`` as ``2026-12-01T10:00:05Z (ts SECONDS:INC)``; ``before TS``
    (the entry that took the collection away) as ``just before ...``."""
    before, _, ts = text.rpartition(" ")
    when = datetime.fromtimestamp(int(ts.partition(":")[0]), UTC)
    return f"{'just before ' if before else ''}{when:%Y-%m-%dT%H:%M:%SZ} (ts {ts})"


def outcome_line(outcome: CollectionOutcome) -> str:
    """One collection's outcome, in words that claim only what happened."""
    from ..pipelines.engine import Status
    from ..units import size

    indexes = plural(outcome.indexes, "index", "indexes")
    counts = f"{plural(outcome.documents, 'document')}, {indexes}"
    if outcome.status is Status.WOULD_RESTORE:
        return f"{outcome.name}: would restore from {outcome.archive} ({counts})"
    if outcome.status is Status.REAPPEARED:
        return f"{outcome.name}: reappeared while being restored from {outcome.archive}; left alone"
    if outcome.status is Status.EXISTS:
        return f"{outcome.name}: exists; left alone"
    if outcome.status is Status.BUSY:
        return f"{outcome.name}: being restored by another run; left to it"
    return (
        f"{outcome.name}: {outcome.status} from {outcome.archive} ({counts}, "
        f"{size(outcome.bytes_fetched)} of {size(outcome.archive_size)} fetched, "
        f"{outcome.duration:.1f}s)"
    )
