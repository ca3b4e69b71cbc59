"""Replay oplog entries onto a database, in pure Python, idempotently.

Every entry is applied by mongosnap itself (FerretDB and other servers
without ``applyOps`` included), so that replaying an entry twice changes
nothing:

- ``i``: the whole document replaces the one with its ``_id``, or is inserted;
- ``u``: the current document is read by ``_id``, the update applied to it in
  Python (``diff.py``) and the result written back whole; an update of a
  document that is not there is skipped and counted (``missing``): the entries
  that follow delete it or the snapshot already held its later state;
- ``d``: delete by ``_id``;
- ``c``: commands (``commands.py``), ``applyOps`` recursively, transactions
  applied at their commit (``txn.py``);
- ``n``: skipped.

Writes to one collection are sent in ordered batches; an update reads through
the batch, so it always sees the entries before it.

Stop conditions: ``until`` (inclusive), and ``before_loss``, which leaves each
selected namespace as it was just before the first entry that drops it,
renames it away, replaces it by a rename, or drops its database.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import DeleteOne, ReplaceOne
from pymongo.errors import BulkWriteError

from .._errors import ReplayError, SourceError
from ..source import Source
from .commands import Skip, apply_command, command_name, losses, touched
from .diff import apply_update, is_full_image
from .entry import PLAIN, RAW, OplogEntry, encode, format_ts, parse_entry, plain
from .scope import Scope, Selector
from .target import ReplayTarget, Write
from .txn import Transactions

DEFAULT_BATCH = 1000

Entries = Iterable[Any] | AsyncIterable[Any]


@dataclass
class ReplayReport:
    """What a replay did.

    ``applied`` counts entries by kind: ``i``, ``u``, ``d`` and command names,
    plus ``applyOps`` and ``transaction`` (commits); ``skipped`` counts those
    left alone by reason. ``namespaces`` are where writes landed (after the
    database renaming). ``stop`` is ``end``, ``until`` or ``loss``; ``lost``
    maps each namespace (``db.*`` for a database) whose loss was held back to
    the timestamp of that entry.
    """

    applied: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    namespaces: set[str] = field(default_factory=set)
    entries: int = 0
    last_ts: Timestamp | None = None
    stop: str = "end"
    lost: dict[str, Timestamp] = field(default_factory=dict)
    pending_transactions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": dict(sorted(self.applied.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "namespaces": sorted(self.namespaces),
            "entries": self.entries,
            "last_ts": format_ts(self.last_ts) if self.last_ts else None,
            "stop": self.stop,
            "lost": {ns: format_ts(ts) for ns, ts in sorted(self.lost.items())},
            "pending_transactions": self.pending_transactions,
        }


async def replay(
    target: Any,
    entries: Entries,
    *,
    namespaces: Selector = None,
    databases: Mapping[str, str] | None = None,
    until: Timestamp | None = None,
    before_loss: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> ReplayReport:
    """Replay ``entries`` (in oplog order) onto ``target``; see the module docstring.

    ``target``: a URI, ``host[:port]``, PyMongo ``AsyncMongoClient``, Motor
    client or ``Source``. ``namespaces``: ``db.collection`` names or a
    predicate on them (default: every namespace outside admin, config, local
    and ``system.*``). ``databases``: renaming of database names, as
    ``restore --to-database``.
    """
    scope = Scope.build(namespaces, databases)
    async with _open(target) as replay_target:
        engine = Replayer(replay_target, scope, until, before_loss, batch_size)
        await engine.run(entries)
    return engine.report


@contextlib.asynccontextmanager
async def _open(target: Any) -> AsyncIterator[ReplayTarget]:
    if isinstance(target, ReplayTarget):
        yield target
        return
    if isinstance(target, Source):
        yield ReplayTarget.of(target)
        return
    async with await ReplayTarget.connect(target) as connected:
        assert isinstance(connected, ReplayTarget)
        yield connected


async def _each(entries: Entries) -> AsyncIterator[Any]:
    if isinstance(entries, AsyncIterable):
        async for item in entries:
            yield item
    else:
        for item in entries:
            yield item


class Replayer:
    """The state of one replay: batch, held transactions, lost namespaces, report."""

    def __init__(
        self,
        target: ReplayTarget,
        scope: Scope,
        until: Timestamp | None = None,
        before_loss: bool = False,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self.target = target
        self.scope = scope
        self.until = until
        self.before_loss = before_loss
        self.report = ReplayReport()
        self._txns = Transactions()
        self._batch = _Batch(batch_size)
        self._lost: set[str] = set()
        self._lost_databases: set[str] = set()
        self._last_namespace: tuple[str, str] | None = None

    async def run(self, entries: Entries) -> None:
        try:
            async for item in _each(entries):
                entry = parse_entry(item)
                if self.until is not None and entry.ts > self.until:
                    self.report.stop = "until"
                    break
                self.report.entries += 1
                await self.apply(entry)
                if self._all_lost():
                    self.report.stop = "loss"
                    break
                self.report.last_ts = entry.ts
            await self._flush()
        finally:
            self.report.pending_transactions = self._txns.pending

    async def apply(self, entry: OplogEntry) -> None:
        """Apply one entry (top-level or nested in applyOps)."""
        if entry.op == "n":
            self.report.skipped["n"] += 1
        elif entry.op in ("i", "u", "d"):
            await self._crud(entry)
        elif entry.op == "c":
            await self._command(entry)
        else:
            raise ReplayError(f"{entry.describe()}: op {entry.op!r} cannot be replayed")

    # ------------------------------------------------------------ i / u / d

    async def _crud(self, entry: OplogEntry) -> None:
        if not self.scope.selected(entry.ns):
            self.report.skipped["unselected"] += 1
            return
        if self._is_lost(entry.ns):
            self.report.skipped["after loss"] += 1
            return
        database, collection = self.scope.target(entry.ns)
        if entry.collection == "system.indexes":
            raise ReplayError(f"{entry.describe()}: legacy index inserts cannot be replayed")
        if entry.op == "i":
            doc_id = _id_of(entry, entry.o)
            await self._upsert(entry, database, collection, doc_id, encode(entry.o))
        elif entry.op == "d":
            await self._delete(entry, database, collection, _id_of(entry, entry.o))
        elif not await self._update(entry, database, collection):
            self.report.skipped["missing"] += 1
            return
        self.report.applied[entry.op] += 1
        self.report.namespaces.add(f"{database}.{collection}")

    async def _upsert(
        self, entry: OplogEntry, database: str, collection: str, doc_id: Any, raw: bytes
    ) -> None:
        write: Write = ReplaceOne({"_id": doc_id}, RawBSONDocument(raw, RAW), upsert=True)
        await self._add(entry, database, collection, doc_id, write, raw)

    async def _delete(self, entry: OplogEntry, database: str, collection: str, doc_id: Any) -> None:
        await self._add(entry, database, collection, doc_id, DeleteOne({"_id": doc_id}), None)

    async def _update(self, entry: OplogEntry, database: str, collection: str) -> bool:
        """Write the updated document; False when there is no document to update."""
        o = plain(entry.o)
        doc_id = _id_of(entry, entry.o2 or {})
        current = await self._current(database, collection, doc_id)
        if is_full_image(o):
            new = dict(o["$set"])
        elif current is None:
            return False
        else:
            try:
                new = apply_update(bson.decode(current, PLAIN), o)
            except ReplayError as exc:
                raise ReplayError(f"{entry.describe()}: {exc}") from exc
        await self._upsert(entry, database, collection, doc_id, encode(new))
        return True

    async def _current(self, database: str, collection: str, doc_id: Any) -> bytes | None:
        if self._batch.namespace != (database, collection):
            await self._flush()
        key = _key(doc_id)
        if key in self._batch.images:
            return self._batch.images[key]
        return await self.target.find_raw(database, collection, doc_id)

    async def _add(
        self,
        entry: OplogEntry,
        database: str,
        collection: str,
        doc_id: Any,
        write: Write,
        image: bytes | None,
    ) -> None:
        if self._batch.namespace not in (None, (database, collection)) or self._batch.full:
            await self._flush()
        self._batch.add((database, collection), entry, write, _key(doc_id), image)

    async def _flush(self) -> None:
        batch = self._batch
        if batch.namespace is None:
            return
        database, collection = self._last_namespace = batch.namespace
        writes, entries = batch.take()
        try:
            await self.target.write(database, collection, writes)
        except SourceError as exc:
            if type(exc) is not SourceError:
                raise  # unreachable server, authentication: not an entry's fault
            named = _write_error(exc, entries) or await self._locate(writes, entries, exc)
            raise named from exc

    async def _locate(
        self, writes: list[Write], entries: list[OplogEntry], exc: SourceError
    ) -> ReplayError:
        """Find the refused write by sending them one at a time (each is idempotent)."""
        assert self._last_namespace is not None
        for write, entry in zip(writes, entries, strict=True):
            try:
                await self.target.write(*self._last_namespace, [write])
            except SourceError as single:
                return ReplayError(f"{entry.describe()}: the server refused the write: {single}")
        return ReplayError(f"{entries[0].describe()} and after: {exc}")

    # ------------------------------------------------------------ c

    async def _command(self, entry: OplogEntry) -> None:
        name = command_name(entry.o)
        if name == "applyOps":
            await self._apply_ops(entry)
        elif name == "commitTransaction":
            key = _txn_key(entry)
            await self._run(entry, self._txns.commit_prepared(entry, key), "transaction")
        elif name == "abortTransaction":
            self.report.skipped["aborted"] += self._txns.abort(_txn_key(entry))
        else:
            await self._flush()
            o = plain(entry.o)
            if self._holds_back(entry, o):
                self.report.skipped["loss"] += 1
                return
            outcome = await apply_command(self.target, self.scope, entry, o)
            self._count(entry, o, outcome)

    def _count(self, entry: OplogEntry, o: Mapping[str, Any], outcome: str | Skip) -> None:
        if isinstance(outcome, Skip):
            self.report.skipped[outcome.reason] += 1
            return
        self.report.applied[outcome] += 1
        for database, collection in touched(entry, o):
            self.report.namespaces.add(f"{self.scope.database(database)}.{collection}")

    async def _apply_ops(self, entry: OplogEntry) -> None:
        ops = entry.o.get("applyOps")
        if not isinstance(ops, list):
            raise ReplayError(f"{entry.describe()}: applyOps is not a list")
        key = entry.txn_key
        if key is None:
            await self._run(entry, ops, "applyOps")
        elif entry.flag("partialTxn") or entry.flag("prepare"):
            self._txns.hold(entry, key, ops)
        else:
            await self._run(entry, self._txns.commit(entry, key, ops), "transaction")

    async def _run(self, entry: OplogEntry, ops: list[Any], counted: str) -> None:
        for op in ops:
            await self.apply(parse_entry(op, ts=entry.ts))
        self.report.applied[counted] += 1

    # ------------------------------------------------------------ loss

    def _holds_back(self, entry: OplogEntry, o: Mapping[str, Any]) -> bool:
        """With before_loss: True (and the namespaces frozen) when the entry loses any."""
        if not self.before_loss:
            return False
        found = False
        for database, collection in losses(entry, o):
            if collection is None and not self._selects_in(database):
                continue
            if collection is None:
                self._lost_databases.add(database)
                self.report.lost[f"{database}.*"] = entry.ts
                found = True
            elif self.scope.in_database(database, collection):
                self._lost.add(f"{database}.{collection}")
                self.report.lost[f"{database}.{collection}"] = entry.ts
                found = True
        return found

    def _selects_in(self, database: str) -> bool:
        names = self.scope.names
        return names is None or any(n.partition(".")[0] == database for n in names)

    def _is_lost(self, ns: str) -> bool:
        return ns in self._lost or ns.partition(".")[0] in self._lost_databases

    def _all_lost(self) -> bool:
        names = self.scope.names
        return bool(names) and names is not None and all(self._is_lost(n) for n in names)


class _Batch:
    """Pending writes to one collection, and the document each leaves behind."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.namespace: tuple[str, str] | None = None
        self.writes: list[Write] = []
        self.entries: list[OplogEntry] = []
        self.images: dict[bytes, bytes | None] = {}

    @property
    def full(self) -> bool:
        return len(self.writes) >= self.size

    def add(
        self,
        namespace: tuple[str, str],
        entry: OplogEntry,
        write: Write,
        key: bytes,
        image: bytes | None,
    ) -> None:
        self.namespace = namespace
        self.writes.append(write)
        self.entries.append(entry)
        self.images[key] = image

    def take(self) -> tuple[list[Write], list[OplogEntry]]:
        taken = self.writes, self.entries
        self.namespace, self.writes, self.entries, self.images = None, [], [], {}
        return taken


def _id_of(entry: OplogEntry, document: Mapping[str, Any]) -> Any:
    if "_id" not in document:
        raise ReplayError(f"{entry.describe()}: no _id to apply it to")
    return plain(document["_id"])


def _key(doc_id: Any) -> bytes:
    return bson.encode({"_id": doc_id}, codec_options=PLAIN)


def _txn_key(entry: OplogEntry) -> bytes:
    key = entry.txn_key
    if key is None:
        raise ReplayError(f"{entry.describe()}: transaction command without lsid/txnNumber")
    return key


def _write_error(exc: SourceError, entries: list[OplogEntry]) -> ReplayError | None:
    """Name the entry a bulk write error points at; None without one."""
    cause = exc.__cause__
    if not isinstance(cause, BulkWriteError):
        return None
    errors = cause.details.get("writeErrors") or [{}]
    index = errors[0].get("index", 0)
    entry = entries[index] if index < len(entries) else entries[0]
    message = errors[0].get("errmsg", str(cause))
    return ReplayError(f"{entry.describe()}: the server refused the write: {message}")
