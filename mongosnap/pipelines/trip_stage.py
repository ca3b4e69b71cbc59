"""``oplog --tripwire ... --stage``: when a rule trips, stage the undo of its window.

The undo (undo.py, stage mode) reads the archived oplog, not the live one, so
a staging first waits until the archiver has stored a chunk reaching the end
of the window; it asks the archiver to write that chunk as soon as the entry
has settled instead of at its next interval. The window then runs from the
start of the second of the first entry the rule counted to the last entry it
counted, followed while the burst goes on: once the chunk is stored, a newer
entry the rule counted within its quiet period (the window after the trip)
moves the end there and the staging waits again, for at most FOLLOW seconds;
then what is stored is staged.

The pre-images are published as ``COLL_undo_<time>`` through a staging name
and one rename; the live collection is never written. One staging at a time
per namespace; a trip while one runs is logged and skipped. Each staging runs
as a task beside the archiver and never fails it: its outcome (``staged``,
``empty``, ``timeout``, ``failed``, ``skipped``) is logged and handed to
``on_done`` (the metrics and ``--on-trip``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._errors import MongosnapError
from .._redact import redact
from ..clients import MongoSource
from ..oplog.position import Ts
from ..oplog.tripwire import Rule, Trip
from ..storage import Storage

log = logging.getLogger("mongosnap.oplog")

STAGE_WAIT = 300.0
"""Seconds a staging waits for the chunk that holds its window's end."""
FOLLOW = 60.0
"""Seconds a staging follows a burst that goes on after the trip."""
CLOSE_GRACE = 10.0
OUTCOMES = ("staged", "empty", "timeout", "failed", "skipped")


@dataclass(frozen=True)
class Staged:
    """How the staging of one trip ended."""

    outcome: str
    collection: str | None = None
    """``DB.NAME`` of the published collection (``staged`` only)."""
    window: tuple[Ts, Ts] | None = None
    reason: str = ""


LastCounted = Callable[[str, Rule], Ts | None]
StageCallback = Callable[[Trip, Staged], None]


class TripStager:
    """Starts a staging per trip; the archiver attaches its source and storage."""

    def __init__(
        self,
        last_counted: LastCounted,
        on_done: StageCallback | None = None,
        *,
        wait: float = STAGE_WAIT,
    ) -> None:
        self.last_counted = last_counted
        self.on_done = on_done
        self.wait = wait
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stored_to: Ts | None = None
        self._stored = asyncio.Event()
        self._source: MongoSource | None = None
        self._storage: Storage | None = None
        self._want: Callable[[Ts], None] = lambda ts: None
        self._connect_timeout = 10.0

    def attach(
        self,
        source: MongoSource,
        storage: Storage,
        want: Callable[[Ts], None],
        connect_timeout: float = 10.0,
    ) -> None:
        """The archiver's source (written to by undo: never a pinned secondary), its
        destination, and how to ask it for a chunk reaching a ts soon."""
        self._source, self._storage, self._want = source, storage, want
        self._connect_timeout = connect_timeout

    def stored(self, last: Ts) -> None:
        """The archiver stored a chunk whose entries reach ``last``."""
        if self.stored_to is None or last > self.stored_to:
            self.stored_to = last
        self._stored.set()
        self._stored = asyncio.Event()

    def __call__(self, trip: Trip) -> None:
        """Called by the tripwires from inside the archiver's event loop."""
        previous = self.running.get(trip.namespace)
        if previous is not None and not previous.done():
            log.warning(
                "--stage for %s on %s skipped: a staging of that collection is still going",
                trip.rule.text,
                _printable(trip.namespace),
            )
            self._done(trip, Staged("skipped", reason="a staging of the collection is going"))
            return
        self.running = {ns: task for ns, task in self.running.items() if not task.done()}
        self.running[trip.namespace] = asyncio.get_running_loop().create_task(self._run(trip))

    async def _run(self, trip: Trip) -> None:
        started = time.monotonic()
        try:
            staged = await self._stage(trip)
        except MongosnapError as exc:
            staged = Staged("failed", reason=str(exc))
        except Exception as exc:  # never the archiver's end: logged and counted
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(self._source, str):
                reason = redact(reason, self._source)
            staged = Staged("failed", reason=reason)
        _log(trip, staged, time.monotonic() - started)
        self._done(trip, staged)

    def _done(self, trip: Trip, staged: Staged) -> None:
        if self.on_done is None:
            return
        try:
            self.on_done(trip, staged)
        except Exception as exc:
            log.error("after --stage for %s: %s", _printable(trip.namespace), exc)

    async def _stage(self, trip: Trip) -> Staged:
        from .undo import undo

        assert trip.first is not None and trip.last is not None
        if self._source is None or self._storage is None:
            return Staged("failed", reason="the archiver has not started")
        deadline = time.monotonic() + self.wait
        end = trip.last
        if not await self._until_stored(end, deadline):
            reason = f"no stored chunk reached {end} within {self.wait:.0f} s"
            return Staged("timeout", window=(trip.first, end), reason=reason)
        end = await self._follow(trip, end, min(deadline, time.monotonic() + FOLLOW))
        database, _, collection = trip.namespace.partition(".")
        report = await undo(
            self._source,
            self._storage,
            database=database,
            collection=collection,
            start=trip.first,
            end=end,
            mode="stage",
            connect_timeout=self._connect_timeout,
            warn=log.warning,
        )
        if report.staged_collection is None:
            return Staged("empty", window=(trip.first, end), reason="nothing deleted or changed")
        return Staged("staged", f"{database}.{report.staged_collection}", (trip.first, end))

    async def _follow(self, trip: Trip, end: Ts, until: float) -> Ts:
        """The burst's last counted entry whose chunk is stored: while the rule
        counts newer entries within its quiet period, up to ``until``."""
        quiet = trip.end + trip.rule.window
        while True:
            newer = self.last_counted(trip.namespace, trip.rule)
            if newer is None or newer <= end or newer.t >= quiet:
                return end
            if not await self._until_stored(newer, until):
                return end  # it goes on: stage what is stored
            end = newer

    async def _until_stored(self, end: Ts, deadline: float) -> bool:
        self._want(end)
        while self.stored_to is None or self.stored_to < end:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stored.wait(), left)
        return True

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Give the stagings still going ``grace`` seconds, then cancel them (a
        cancelled staging leaves no collection: staging.py)."""
        going = [task for task in self.running.values() if not task.done()]
        if going:
            _, late = await asyncio.wait(going, timeout=grace)
            for task in late:
                log.warning("--stage still running after %.0f s: cancelled", grace)
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def _log(trip: Trip, staged: Staged, seconds: float) -> None:
    ns = _printable(trip.namespace)
    window = f" (window {staged.window[0]} .. {staged.window[1]})" if staged.window else ""
    if staged.outcome == "staged":
        log.warning(
            "--stage for %s on %s: pre-images staged as %s%s in %.1f s; the live "
            "collection is unchanged",
            trip.rule.text,
            ns,
            _printable(staged.collection or ""),
            window,
            seconds,
        )
    elif staged.outcome == "empty":
        log.warning("--stage for %s on %s: nothing to stage%s", trip.rule.text, ns, window)
    else:
        log.error("--stage for %s on %s %s: %s", trip.rule.text, ns, staged.outcome, staged.reason)


def _printable(text: str) -> str:
    return text if text.isprintable() else repr(text)
