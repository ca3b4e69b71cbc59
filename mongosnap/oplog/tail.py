"""Read ``local.oplog.rs``: its bounds, and a tailable awaitable stream of raw entries.

Entries stay raw BSON (the bytes the server sent); only ``ts`` and ``ns`` are
looked at. The stream resumes after a known position and says so when it
cannot: if the last archived entry is no longer in the oplog (it rolled over,
or the reader was away too long), a ``Gap`` comes before the next entry.

MongoDB returns the oplog in ``ts`` order. FerretDB 1.24 may not: under
concurrent writers two neighbouring entries can come in swapped order. So a
resume reads from a little before the last position (``Resume.recent``, the
timestamps archived last) and drops what was already archived, instead of
trusting ``ts > last`` alone. FerretDB 1.24 also drops entries from an
awaitData cursor whose getMore wait (maxTimeMS) expires while it is filling a
batch; on FerretDB (detected by ``buildInfo.ferretdbVersion``) the cursor is
therefore tailable without awaitData, and an empty getMore is followed by a
client-side pause of ``await_ms``.

FerretDB also makes an entry visible late: it takes the entry's ts, writes
the data, then inserts the entry into the capped ``local.oplog.rs``, so an
entry can commit after one with a later ts that a tailing cursor has already
passed, and that cursor never returns it. So on FerretDB, every half
``settle`` (at most once per ``await_ms``), the tail also re-reads every
entry not yet *settled* with a plain find and keeps those it has not seen.
An entry is settled once an entry at or after its ts was read at least
``settle`` seconds before a re-read began: FerretDB's ts counter only grows,
so an entry given an earlier ts started its write before that one was read,
and becomes visible within ``settle`` seconds of that (docs/pitr.md gives
the figures). ``settled()`` says up to which ts the entries read are final;
the archiver writes chunks only up to there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument

from .._aio import shielded
from .._errors import AuthenticationFailed, ServerUnreachable, SourceError, UsageError
from ..source import Source
from .position import Ts

OPLOG_DB = "local"
OPLOG_COLLECTION = "oplog.rs"
RECENT_LIMIT = 10_000
"""Timestamps remembered for de-duplication after a cursor is reopened."""

MAX_REOPEN_FAILURES = 5
"""Server errors in a row, with no entry read in between, before giving up."""

FERRETDB_SETTLE = 5.0
"""Seconds within which FerretDB makes an entry visible after a later one was
read (about 1.2 s seen with 4 writers on 2 busy cores; docs/pitr.md)."""

log = logging.getLogger("mongosnap.oplog")


def entry_ts(entry: bytes) -> Ts:
    """The ``ts`` of one raw oplog entry."""
    try:
        return Ts.from_bson(RawBSONDocument(entry)["ts"])
    except (KeyError, ValueError, TypeError) as exc:
        raise SourceError(f"oplog entry without a valid ts: {exc}") from None


def entry_ns(entry: bytes) -> str:
    """The ``ns`` (``db.collection``) of one raw oplog entry ('' if it has none)."""
    value = RawBSONDocument(entry).get("ns")
    return value if isinstance(value, str) else ""


async def require_oplog(src: Source) -> None:
    """UsageError unless the server keeps an oplog (``local.oplog.rs`` exists)."""
    reply = await src.raw_command(
        OPLOG_DB, {"listCollections": 1, "filter": {"name": OPLOG_COLLECTION}, "nameOnly": True}
    )
    if not list(reply["cursor"]["firstBatch"]):
        raise UsageError(
            f"{src.hosts} keeps no oplog: {OPLOG_DB}.{OPLOG_COLLECTION} does not exist "
            "(the server is not a replica set member; an oplog needs mongod --replSet, "
            "or FerretDB --repl-set-name with a capped local.oplog.rs)"
        )


async def is_ferretdb(src: Source) -> bool:
    """FerretDB says so in buildInfo; its awaitData cursors lose entries (module doc)."""
    info = await src.raw_command("admin", {"buildInfo": 1})
    return "ferretdbVersion" in info


async def bound(src: Source, newest: bool) -> Ts | None:
    """The newest (or oldest) entry's ts, None for an empty oplog."""
    reply = await src.raw_command(
        OPLOG_DB,
        {
            "find": OPLOG_COLLECTION,
            "sort": {"$natural": -1 if newest else 1},
            "limit": 1,
            "projection": {"ts": 1},
            "singleBatch": True,
        },
    )
    batch = list(reply["cursor"]["firstBatch"])
    return Ts.from_bson(batch[0]["ts"]) if batch else None


async def read_range(
    src: Source, first: Ts, last: Ts | None, batch_size: int, *, by_ts: bool = False
) -> AsyncIterator[bytes]:
    """Every entry with first <= ts <= last (``last`` None: no upper bound), raw,
    in oplog order (not tailable); ``by_ts``: in ts order.

    In oplog order the server can start at ``first`` instead of scanning from the
    oldest entry: MongoDB 4.4+ does so for any ts-bounded oplog query, older
    servers when asked with ``oplogReplay`` (ignored by 4.4+ and by FerretDB)."""
    bounds = {"$gte": first.to_bson()}
    if last is not None:
        bounds["$lte"] = last.to_bson()
    command: dict[str, Any] = {
        "find": OPLOG_COLLECTION,
        "filter": {"ts": bounds},
        "batchSize": batch_size,
    }
    if by_ts:
        command["sort"] = {"ts": 1}
    else:
        command["oplogReplay"] = True
    reply = await src.raw_command(OPLOG_DB, command)
    cursor = reply["cursor"]
    for doc in cursor["firstBatch"]:
        yield doc.raw
    cursor_id = cursor["id"]
    while cursor_id:
        more = {"getMore": cursor_id, "collection": OPLOG_COLLECTION, "batchSize": batch_size}
        reply = await src.raw_command(OPLOG_DB, more)
        cursor = reply["cursor"]
        for doc in cursor["nextBatch"]:
            yield doc.raw
        cursor_id = cursor["id"]


@dataclass(frozen=True)
class Gap:
    """Entries after ``after`` and before ``before`` may be missing."""

    after: Ts
    before: Ts


@dataclass(frozen=True)
class Batch:
    """New entries, raw, in the order the server returned them (may be empty)."""

    entries: list[bytes]
    stamps: list[Ts]


@dataclass
class Resume:
    """Where a stream continues: after ``after``; ``recent`` were archived already."""

    after: Ts
    recent: Iterable[Ts] = ()


@dataclass
class _Recent:
    """The last archived timestamps, bounded, for de-duplication on reopen."""

    order: deque[Ts] = field(default_factory=lambda: deque(maxlen=RECENT_LIMIT))
    known: set[Ts] = field(default_factory=set)

    def add(self, ts: Ts) -> None:
        if len(self.order) == self.order.maxlen:
            self.known.discard(self.order[0])
        self.order.append(ts)
        self.known.add(ts)

    def floor(self) -> Ts | None:
        return min(self.order) if self.order else None


class OplogTail:
    """A tailable awaitable cursor on the oplog that reopens itself when it dies.

    ``resume`` None starts at the oldest entry (``from_newest``: after the
    newest one). ``stream()`` yields Batch (possibly empty, after ``await_ms``
    without news, so a caller can act on time) and Gap events.
    """

    def __init__(
        self,
        src: Source,
        resume: Resume | None,
        *,
        from_newest: bool = False,
        batch_size: int = 1000,
        await_ms: int = 1000,
        retry_seconds: float = 1.0,
        await_data: bool | None = None,
        settle: float | None = None,
    ) -> None:
        self.src = src
        self.settle = settle  # None: FERRETDB_SETTLE on FerretDB, 0 elsewhere
        self.horizon: Ts | None = None  # entries up to here are settled
        self.marks: deque[tuple[float, Ts]] = deque()  # (when read, newest ts then)
        self.reread_at = 0.0
        self.batch_size = batch_size
        self.await_ms = await_ms
        self.retry_seconds = retry_seconds
        self.from_newest = from_newest
        self.await_data = await_data
        self.recent = _Recent()
        self.expect: Ts | None = None  # must be seen again, or there is a gap
        self.last: Ts | None = None
        self.out_of_order = 0
        if resume is not None:
            for ts in resume.recent:
                self.recent.add(ts)
            self.recent.add(resume.after)
            self.expect = resume.after
            self.last = resume.after

    def settled(self) -> Ts | None:
        """The newest ts up to which the entries read are final (module doc)."""
        return self.last if not self.settle else self.horizon

    async def stream(self) -> AsyncGenerator[Batch | Gap, None]:
        await require_oplog(self.src)
        if self.await_data is None or self.settle is None:
            ferretdb = await is_ferretdb(self.src)
            if self.await_data is None:
                self.await_data = not ferretdb
            if self.settle is None:
                self.settle = FERRETDB_SETTLE if ferretdb else 0.0
        if self.last is None and self.from_newest:
            newest = await bound(self.src, newest=True)
            if newest is not None:
                self.recent.add(newest)
                self.expect = self.last = newest
        delay = self.retry_seconds
        failures = 0
        while True:
            try:
                async for event in self._one_cursor():
                    delay, failures = self.retry_seconds, 0
                    yield event
            except AuthenticationFailed:
                raise
            except ServerUnreachable as exc:  # the gap check on reopen covers the outage
                log.warning("oplog reader: %s; retrying in %.0fs", exc, delay)
                yield Batch([], [])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except SourceError as exc:  # cursor lost (capped position, killed): reopen
                failures += 1
                if failures > MAX_REOPEN_FAILURES:
                    raise
                log.info("oplog cursor ended (%s); reopening", exc)
                yield Batch([], [])
                await asyncio.sleep(self.retry_seconds / 10)

    async def _one_cursor(self) -> AsyncGenerator[Batch | Gap, None]:
        if self.last is not None:  # a reopened cursor must find the last entry again
            self.expect = self.last
        floor = self.recent.floor()
        command: dict[str, Any] = {
            "find": OPLOG_COLLECTION,
            "tailable": True,
            "awaitData": bool(self.await_data),
            "batchSize": 0,  # an empty first batch keeps FerretDB's tailable cursor open
        }
        if floor is not None:
            command["filter"] = {"ts": {"$gte": floor.to_bson()}}
        reply = await self.src.raw_command(OPLOG_DB, command)
        cursor_id = reply["cursor"]["id"]
        mode = "awaitData" if self.await_data else f"polling every {self.await_ms} ms"
        log.info("oplog reader ready on %s (tailable, %s)", self.src.hosts, mode)
        more: dict[str, Any] = {"getMore": cursor_id, "collection": OPLOG_COLLECTION}
        more["batchSize"] = self.batch_size
        if self.await_data:
            more["maxTimeMS"] = self.await_ms
        try:
            for event in self._accept(list(reply["cursor"]["firstBatch"])):
                yield event
            while cursor_id:
                reply = await self.src.raw_command(OPLOG_DB, more)
                cursor_id = reply["cursor"]["id"]
                docs = list(reply["cursor"]["nextBatch"])
                for event in self._accept(docs):
                    yield event
                if self.settle and time.monotonic() - self.reread_at >= self._reread_every():
                    async for event in self._reread():
                        yield event
                if not docs and not self.await_data:
                    await asyncio.sleep(self.await_ms / 1000)
        finally:
            if cursor_id:
                await _kill(self.src, cursor_id)
        await asyncio.sleep(self.await_ms / 1000)  # a dead cursor: poll again shortly

    def _reread_every(self) -> float:
        """A re-read scans the oplog on FerretDB (no index on ts): not more than
        twice per settle time, nor more often than the poll."""
        return max(self.await_ms / 1000, (self.settle or 0.0) / 2)

    async def _reread(self) -> AsyncGenerator[Batch | Gap, None]:
        """Every entry not settled yet, once more: the late ones are new (module doc)."""
        began = self.reread_at = time.monotonic()
        settled = None
        while self.marks and self.marks[0][0] <= began - (self.settle or 0.0):
            settled = self.marks.popleft()[1]
        since = max((t for t in (self.horizon, self.recent.floor()) if t is not None), default=None)
        if since is not None:
            # In ts order, it must meet the newest entry read again, or the oplog
            # rolled past it: a Gap, as for a reopened cursor.
            self.expect = self.last
            newest = Ts(0xFFFFFFFF, 0xFFFFFFFF)
            entries = read_range(self.src, since, newest, self.batch_size, by_ts=True)
            found = [doc async for doc in _documents(entries)]
            last, known = self.last, self.recent.known
            late = [ts for doc in found if (ts := entry_ts(bytes(doc.raw))) not in known]
            if last is not None and (behind := sum(1 for ts in late if ts < last)):
                log.info("oplog reader: %d entries became visible late (before %s)", behind, last)
            for event in self._accept(found):
                yield event
        if settled is not None:
            self.horizon = settled if self.horizon is None else max(self.horizon, settled)
            # The entries up to the new horizon may be written now, not after the
            # next getMore (a whole oplog scan on FerretDB): an event to act on.
            yield Batch([], [])

    def _accept(self, docs: list[Any]) -> Iterable[Batch | Gap]:
        entries: list[bytes] = []
        stamps: list[Ts] = []
        for doc in docs:
            raw = bytes(doc.raw)
            ts = entry_ts(raw)
            if ts in self.recent.known:
                if ts == self.expect:
                    self.expect = None
                continue
            if self.expect is not None and ts > self.expect:
                if entries:
                    yield Batch(entries, stamps)
                    entries, stamps = [], []
                yield Gap(self.expect, ts)
                self.expect = None
            if self.last is not None and ts < self.last:
                self.out_of_order += 1
            self.last = ts if self.last is None else max(self.last, ts)
            self.recent.add(ts)
            entries.append(raw)
            stamps.append(ts)
        if stamps and self.last is not None:
            self.marks.append((time.monotonic(), self.last))
        if entries or not docs:
            yield Batch(entries, stamps)


async def _documents(entries: AsyncIterator[bytes]) -> AsyncIterator[RawBSONDocument]:
    async for entry in entries:
        yield RawBSONDocument(entry)


async def _kill(src: Source, cursor_id: int) -> None:
    """Best effort: a cursor left behind times out on the server anyway."""

    async def kill() -> None:
        await src.raw_command(OPLOG_DB, {"killCursors": OPLOG_COLLECTION, "cursors": [cursor_id]})

    with contextlib.suppress(SourceError):
        await shielded(kill())
