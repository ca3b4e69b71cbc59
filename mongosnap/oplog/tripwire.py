"""Tripwires: rules on the rate of deletes and updates the oplog archiver reads.

A rule (grammar in docs/pitr.md, "Tripwires") names a namespace (or ``DB.*``)
and a limit over a window of oplog time::

    DB.COLL:deletes>1000/60s    more than 1000 deletes within 60 s
    DB.COLL:updates>5000/5m     more than 5000 updates within 5 minutes
    DB.COLL:shrink>20%[/WINDOW] deletes within WINDOW (default 60 s) above 20 %
                                of the collection's count at the window start

Windows run over the entries' ``ts``, not the wall clock, so a backlog read at
once counts as it happened. Memory stays bounded: each (namespace, rule) keeps
one bucket per second that saw a matching entry, and only the window's.

``shrink`` needs the count at the window start: the newest archive's manifest
count for the collection (``Baseline``), plus the inserts and minus the deletes
with ``ts`` after the archive's point and before the window. A collection the
archive does not list is never judged by ``shrink``.

A rule that trips is not judged again for that namespace until its window has
passed since the trip (oplog time): one trip per burst, not one per entry.

The operations of a transaction (``applyOps`` entries, nested ones too) count
at the entry that commits them: at once for an ``applyOps`` outside a
transaction or one that commits by being written; held (as counts per
namespace and op) across ``partialTxn`` and ``prepare`` entries until the
committing ``applyOps`` or ``commitTransaction``; dropped on
``abortTransaction``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from bson.raw_bson import RawBSONDocument

from .._errors import ReplayError, UsageError
from ..units import iso_utc
from .entry import parse_entry
from .position import Ts
from .txn import applied_separately

if TYPE_CHECKING:
    from ..archive.manifest import Manifest
    from ..storage import Storage

log = logging.getLogger("mongosnap.oplog")

MAX_WINDOW = 86400
"""Seconds: the longest window (1 day), which bounds each ring."""
DEFAULT_SHRINK_WINDOW = 60
MAX_COUNT = 10**9
BASELINE_REFRESH = 300.0
"""Seconds between two reads of the newest archives' counts while archiving."""
MAX_HELD = 1000
"""Open transactions whose operations are held; beyond it the oldest is forgotten."""
_UNITS = {"s": 1, "m": 60, "h": 3600}
_RULE = re.compile(
    r"(?P<kind>deletes|updates)>(?P<count>[0-9]{1,10})/(?P<window>[0-9]{1,6}[smh])"
    r"|shrink>(?P<pct>[0-9]{1,3}(?:\.[0-9]{1,2})?)%(?:/(?P<swindow>[0-9]{1,6}[smh]))?"
)
_BAD_DATABASE = set('/\\. "$\0')

Kind = Literal["deletes", "updates", "shrink"]


@dataclass(frozen=True)
class Rule:
    """One parsed ``--tripwire`` spec; ``collection`` None stands for ``*``."""

    database: str
    collection: str | None
    kind: Kind
    limit: float
    """deletes/updates: a count; shrink: a percentage (0 < limit <= 100)."""
    window: int
    """Seconds of oplog time."""
    text: str
    """The rule part (``deletes>1000/60s``), the ``rule`` label of metrics."""

    def matches(self, database: str, collection: str) -> bool:
        return database == self.database and self.collection in (None, collection)


def parse(spec: str) -> Rule:
    """A rule from ``DB.COLL:RULE`` or ``DB.*:RULE``; UsageError (exit 2) saying why not."""
    if not isinstance(spec, str) or not spec.isprintable() or len(spec) > 512:
        raise UsageError(f"tripwire {spec!r}: not printable text of at most 512 characters")
    namespace, colon, rule = spec.rpartition(":")  # a collection name may hold ':'
    if not colon:
        raise UsageError(f"tripwire {spec!r}: expected DB.COLL:RULE (app.users:deletes>1000/60s)")
    database, dot, collection = namespace.partition(".")
    if not dot or not database or not collection:
        raise UsageError(f"tripwire {spec!r}: the namespace is DB.COLL or DB.*")
    if set(database) & _BAD_DATABASE or len(database.encode()) > 63:
        raise UsageError(f"tripwire {spec!r}: {database!r} is not a database name")
    if collection.startswith("$") or (collection != "*" and "*" in collection):
        raise UsageError(f"tripwire {spec!r}: {collection!r} is not a collection name or *")
    found = _RULE.fullmatch(rule)
    if found is None:
        raise UsageError(
            f"tripwire {spec!r}: the rule is deletes>N/WINDOW, updates>N/WINDOW or "
            "shrink>PCT%[/WINDOW] (WINDOW: a number with s, m or h)"
        )
    coll = None if collection == "*" else collection
    if found["pct"] is not None:
        pct = float(found["pct"])
        if not 0 < pct <= 100:
            raise UsageError(f"tripwire {spec!r}: the shrink percentage is above 0, at most 100")
        window = _window(found["swindow"], spec) if found["swindow"] else DEFAULT_SHRINK_WINDOW
        return Rule(database, coll, "shrink", pct, window, rule)
    limit = int(found["count"])
    if limit > MAX_COUNT:
        raise UsageError(f"tripwire {spec!r}: the count is at most {MAX_COUNT}")
    kind: Kind = "deletes" if found["kind"] == "deletes" else "updates"
    return Rule(database, coll, kind, limit, _window(found["window"], spec), rule)


def _window(text: str, spec: str) -> int:
    span = int(text[:-1]) * _UNITS[text[-1]]
    if not 1 <= span <= MAX_WINDOW:
        raise UsageError(f"tripwire {spec!r}: the window is from 1s to 24h")
    return span


@dataclass(frozen=True)
class Trip:
    """A rule that tripped on one namespace: ``count`` matching entries (shrink:
    deletes) in the window ``[start, end]`` (seconds since the epoch, oplog time)."""

    namespace: str
    rule: Rule
    count: int
    start: int
    end: int
    base: int | None = None
    """shrink: the collection's count at the window start."""
    first: Ts | None = None
    """The start of the second of the window's first counted entry."""
    last: Ts | None = None
    """The ts of the entry that tripped the rule (the last one counted)."""


@dataclass(frozen=True)
class Baseline:
    """Collection counts from the newest archive of each database.

    Per namespace ``db.coll``: (documents, point); entries at or before
    ``point`` are already in the count (the archive's consistent point, or
    the end of its dump when it has no oplog window)."""

    counts: Mapping[str, tuple[int, Ts]]


async def read_baseline(storage: Storage, databases: Iterable[str]) -> Baseline:
    """The counts of the newest complete archive holding each database (none: not judged)."""
    from ..catalog import newest_archives

    counts: dict[str, tuple[int, Ts]] = {}
    for database in sorted(set(databases)):
        async with contextlib.aclosing(newest_archives(storage, database=database)) as found:
            async for info in found:
                manifest = info.manifest
                if info.trusted and manifest is not None:  # a legacy archive has no counts
                    counts.update(_counts(manifest, database))
                    break
    return Baseline(counts)


async def keep_baseline(
    tripwires: Tripwires, storage: Storage, every: float = BASELINE_REFRESH
) -> None:
    """Read the newest archives' counts every ``every`` seconds, until cancelled; a
    newer archive replaces the count ``shrink`` starts from. A failed read is logged."""
    from .._errors import MongosnapError

    databases = tripwires.databases("shrink")
    while True:
        await asyncio.sleep(every)
        try:
            baseline = await read_baseline(storage, databases)
        except MongosnapError as exc:
            log.warning("tripwire counts not refreshed: %s", exc)
            continue
        for ns in tripwires.refresh(baseline):
            log.info("tripwire shrink counts of %s now from a newer archive", _printable(ns))


def _printable(ns: str) -> str:
    return ns if ns.isprintable() else repr(ns)


def _counts(manifest: Manifest, database: str) -> dict[str, tuple[int, Ts]]:
    if manifest.oplog is not None:
        point = Ts(*manifest.oplog.last_ts)
    else:
        point = Ts(int(manifest.finished.timestamp()), 0)
    return {
        f"{c.database}.{c.name}": (c.documents, point)
        for c in manifest.collections
        if c.database == database and c.type == "collection" and c.bson is not None
    }


@dataclass
class _Ring:
    """Per-second buckets ``[second, hits, net]`` of one (namespace, rule) within its window.

    ``net`` (inserts minus deletes) of buckets that left the window is folded
    into ``before``: shrink's count at the window start."""

    window: int
    buckets: deque[list[int]] = field(default_factory=deque)
    hits: int = 0
    before: int = 0
    quiet_until: int = -1  # tripped: not judged again before this second
    last: Ts | None = None  # the newest counted entry (hits)

    def add(self, second: int, hits: int, net: int) -> None:
        for bucket in reversed(self.buckets):  # entries come nearly in order: scan from the end
            if bucket[0] == second:
                bucket[1] += hits
                bucket[2] += net
                break
            if bucket[0] < second:
                self._insert(second, hits, net)
                break
        else:
            self._insert(second, hits, net)
        self.hits += hits

    def first_hit(self) -> int | None:
        """The second of the window's first counted entry."""
        return next((second for second, hits, _ in self.buckets if hits), None)

    def _insert(self, second: int, hits: int, net: int) -> None:
        index = len(self.buckets)
        while index and self.buckets[index - 1][0] > second:
            index -= 1
        self.buckets.insert(index, [second, hits, net])

    def trim(self, now: int) -> None:
        """Drop the buckets at or before ``now - window``: the window is (now - window, now]."""
        while self.buckets and self.buckets[0][0] <= now - self.window:
            _, hits, net = self.buckets.popleft()
            self.hits -= hits
            self.before += net


TripCallback = Callable[[Trip], None]


def iso(second: int) -> str:
    """Seconds since the epoch (oplog time) as RFC 3339 UTC, as log lines print times."""
    return iso_utc(datetime.fromtimestamp(second, UTC)) or ""


class Tripwires:
    """Counts the entries the archiver reads against the rules; calls ``on_trip``."""

    def __init__(
        self,
        rules: Iterable[Rule],
        on_trip: TripCallback | None = None,
        baseline: Baseline | None = None,
    ) -> None:
        self.rules = list(rules)
        self.on_trip = on_trip
        self.baseline = baseline
        self.rings: dict[tuple[str, Rule], _Ring] = {}
        self.trips: list[Trip] = []
        self.now = 0  # the newest second seen: windows end here
        self.held: dict[bytes, Counter[tuple[str, str]]] = {}  # open transactions' operations

    def databases(self, kind: Kind) -> set[str]:
        """The databases some rule of ``kind`` watches."""
        return {rule.database for rule in self.rules if rule.kind == kind}

    def observe(self, entry: bytes | RawBSONDocument, ts: Ts) -> None:
        """Count one oplog entry (raw BSON); entries of no watched namespace cost a lookup."""
        doc = entry if isinstance(entry, RawBSONDocument) else RawBSONDocument(entry)
        op, ns = doc.get("op"), doc.get("ns")
        if op == "c":
            self._command(doc, ts)
            return
        if op not in ("i", "u", "d") or not isinstance(ns, str):
            return
        self._one(op, ns, ts)

    def _one(self, op: str, ns: str, ts: Ts) -> None:
        database, _, collection = ns.partition(".")
        self.now = max(self.now, ts.t)
        for rule in self.rules:
            if rule.matches(database, collection):
                self._count(ns, rule, op, ts)

    def _command(self, doc: RawBSONDocument, ts: Ts) -> None:
        """A transaction's operations, counted when it commits (module doc)."""
        o = doc.get("o")
        if not isinstance(o, Mapping) or not (
            "applyOps" in o or "commitTransaction" in o or "abortTransaction" in o
        ):
            return
        try:
            entry = parse_entry(doc)
            key = entry.txn_key
            ops = Counter(self._watched(o.get("applyOps")))
        except (ReplayError, TypeError, ValueError):
            return  # not an entry replay could read either: nothing to count
        if "applyOps" not in o:
            held = self.held.pop(key, Counter()) if key is not None else Counter()
            if "commitTransaction" in o:
                self._release(held, ts)
            return
        if key is None or applied_separately(entry):
            self._release(ops, ts)
        elif entry.flag("partialTxn") or entry.flag("prepare"):
            self.held.setdefault(key, Counter()).update(ops)
            while len(self.held) > MAX_HELD:
                del self.held[next(iter(self.held))]
        else:
            self._release(self.held.pop(key, Counter()) + ops, ts)

    def _watched(self, ops: object) -> Iterator[tuple[str, str]]:
        """(op, ns) of the i/u/d operations of an applyOps list some rule watches."""
        if not isinstance(ops, list):
            return
        for op in ops:
            if not isinstance(op, Mapping):
                continue
            kind, ns = op.get("op"), op.get("ns")
            if kind == "c" and isinstance(op.get("o"), Mapping):
                yield from self._watched(op["o"].get("applyOps"))
            elif kind in ("i", "u", "d") and isinstance(ns, str):
                database, _, collection = ns.partition(".")
                if any(rule.matches(database, collection) for rule in self.rules):
                    yield kind, ns

    def _release(self, ops: Counter[tuple[str, str]], ts: Ts) -> None:
        for (op, ns), times in ops.items():
            for _ in range(times):
                self._one(op, ns, ts)

    def last_counted(self, ns: str, rule: Rule) -> Ts | None:
        """The newest entry of ``ns`` the rule counted (None: none)."""
        ring = self.rings.get((ns, rule))
        return None if ring is None else ring.last

    def refresh(self, baseline: Baseline) -> list[str]:
        """Take the counts of newer archives; the namespaces whose count changed.

        A ring of such a namespace restarts from the new count: its entries at or
        before the new point are in that count already, so their net leaves the
        count at the window start (docs/pitr.md, Tripwires)."""
        old = self.baseline.counts if self.baseline is not None else {}
        counts = dict(old)
        changed = []
        for ns, (count, point) in baseline.counts.items():
            if ns in old and old[ns][1] >= point:
                continue
            counts[ns] = (count, point)
            changed.append(ns)
            for (name, rule), ring in self.rings.items():
                if name == ns and rule.kind == "shrink":
                    ring.before = -sum(n for second, _, n in ring.buckets if second <= point.t)
        self.baseline = Baseline(counts)
        return changed

    def _count(self, ns: str, rule: Rule, op: str, ts: Ts) -> None:
        if rule.kind == "shrink":
            base = self._base(ns, ts)
            if base is None:
                return
            hits, net = (1, -1) if op == "d" else (0, 1 if op == "i" else 0)
        else:
            hits, net = (1 if op == rule.kind[0] else 0), 0
        if not hits and not net:
            return
        ring = self.rings.get((ns, rule))
        if ring is None:
            ring = self.rings[(ns, rule)] = _Ring(rule.window)
        ring.add(ts.t, hits, net)
        ring.trim(self.now)
        if hits:
            ring.last = ts if ring.last is None else max(ring.last, ts)
        if hits and self.now >= ring.quiet_until:
            self._judge(ns, rule, ring, ts)

    def _base(self, ns: str, ts: Ts) -> int | None:
        """The archive count of ``ns``, or None when shrink cannot judge this entry."""
        if self.baseline is None or ns not in self.baseline.counts:
            return None
        count, point = self.baseline.counts[ns]
        if ts <= point:
            return None  # already in the archive's count
        return count

    def _judge(self, ns: str, rule: Rule, ring: _Ring, ts: Ts) -> None:
        base = None
        if rule.kind == "shrink":
            assert self.baseline is not None
            base = self.baseline.counts[ns][0] + ring.before
            if base <= 0 or ring.hits * 100 <= rule.limit * base:
                return
        elif ring.hits <= rule.limit:
            return
        first = ring.first_hit()
        trip = Trip(
            ns,
            rule,
            ring.hits,
            self.now - rule.window,
            self.now,
            base,
            first=Ts(first if first is not None else ts.t, 0),
            last=ts,
        )
        ring.quiet_until = self.now + rule.window
        self.trips.append(trip)
        log.warning(
            "tripwire %s tripped on %s: %d %s in the %d s window %s .. %s%s",
            rule.text,
            _printable(ns),  # one log line, whatever the name holds
            trip.count,
            "deletes" if rule.kind == "shrink" else rule.kind,
            rule.window,
            iso(trip.start),
            iso(trip.end),
            f" (of {base} documents at its start)" if base is not None else "",
        )
        if self.on_trip is not None:
            self.on_trip(trip)
