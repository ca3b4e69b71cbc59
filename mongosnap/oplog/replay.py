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

Consecutive entries on one collection form a batch that keeps, per ``_id``,
the state they leave the document in; an update reads through it, so it sees
the entries before it. A batch is sent as one delete of every ``_id`` it
touched and one insert of the documents that remain (raw bytes). A document
is absent between the two commands: the target is not meant to be read while
a replay runs, and an interrupted replay is finished by replaying again.

Stop conditions: ``until`` (inclusive), and ``before_loss``, which leaves each
selected namespace as it was just before the first entry that drops it,
renames it away, replaces it by a rename, or drops its database.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo.errors import BulkWriteError

from .._errors import ReplayError, SourceError
from ..clients import MongoSource
from ..source import Source
from .batch import Batch, Change, id_key
from .commands import Skip, apply_command, command_name, losses, touched
from .diff import apply_update, is_full_image
from .entry import PLAIN, RAW, OplogEntry, encode, parse_entry, plain
from .report import ReplayReport
from .scope import Scope, Selector
from .target import ReplayTarget
from .txn import Transactions

DEFAULT_BATCH = 1000  # documents per batch (one delete and one insert command)

Entries = Iterable[Any] | AsyncIterable[Any]


async def replay(
    target: MongoSource | Source,
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
async def _open(target: MongoSource | Source) -> AsyncIterator[ReplayTarget]:
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
        self._batch = Batch(batch_size)
        self._lost: set[str] = set()
        self._lost_databases: set[str] = set()
        # (database, collection, _id key) -> the server's bytes, None when deleted
        self._cache: dict[tuple[str, str, bytes], bytes | None] = {}

    async def run(self, entries: Entries) -> None:
        try:
            async for window in _windows(_each(entries), self._batch.size):
                parsed = [parse_entry(item) for item in window]
                await self._prefetch(parsed)
                if not await self._run_window(parsed):
                    break
            await self._flush()
        finally:
            self.report.pending_transactions = self._txns.pending

    async def _run_window(self, entries: list[OplogEntry]) -> bool:
        """Apply entries in order; False once a stop condition is met."""
        for entry in entries:
            if self.until is not None and entry.ts > self.until:
                self.report.stop = "until"
                return False
            self.report.entries += 1
            await self.apply(entry)
            if self._all_lost():
                self.report.stop = "loss"
                return False
            self.report.last_ts = entry.ts
        return True

    async def _prefetch(self, entries: list[OplogEntry]) -> None:
        """Read the documents the window's updates need, one query per collection.

        The cache holds the server's state of those documents; flushes keep it
        current and commands clear it. It lives for one window.
        """
        self._cache.clear()
        wanted: dict[tuple[str, str], dict[bytes, Any]] = {}
        for entry in entries:
            if entry.op != "u" or not entry.o2 or "_id" not in entry.o2:
                continue
            if self.scope.selected(entry.ns) and not self._is_lost(entry.ns):
                doc_id = plain(entry.o2["_id"])
                wanted.setdefault(self.scope.target(entry.ns), {})[id_key(doc_id)] = doc_id
        for (database, collection), ids in wanted.items():
            found = await self.target.find_many_raw(database, collection, list(ids.values()))
            for raw in found:
                self._cache[(database, collection, id_key(_raw_id(raw)))] = raw

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
        await self._put(entry, database, collection, doc_id, raw)

    async def _delete(self, entry: OplogEntry, database: str, collection: str, doc_id: Any) -> None:
        await self._put(entry, database, collection, doc_id, None)

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
        key = id_key(doc_id)
        if key in self._batch.images:
            return self._batch.image(key)
        if (database, collection, key) in self._cache:
            return self._cache[(database, collection, key)]
        return await self.target.find_raw(database, collection, doc_id)

    async def _put(
        self, entry: OplogEntry, database: str, collection: str, doc_id: Any, image: bytes | None
    ) -> None:
        if self._batch.namespace not in (None, (database, collection)) or self._batch.full:
            await self._flush()
        self._batch.put((database, collection), entry, doc_id, image)

    async def _flush(self) -> None:
        """Send a batch: delete every _id it touched, insert the documents it leaves."""
        batch = self._batch
        if batch.namespace is None:
            return
        database, collection = batch.namespace
        taken = batch.take()
        for key, change in taken:
            self._cache[(database, collection, key)] = change.image
        changes = [change for _, change in taken]
        ids = [change.doc_id for change in changes]
        kept = [change for change in changes if change.image is not None]
        try:
            await self.target.put(database, collection, ids, [c.image for c in kept if c.image])
        except SourceError as exc:
            if type(exc) is not SourceError:
                raise  # unreachable server, authentication: not an entry's fault
            named = _write_error(exc, kept) or await self._locate(database, collection, changes)
            raise named from exc

    async def _locate(self, database: str, collection: str, changes: list[Change]) -> ReplayError:
        """Find the refused write by sending the changes one at a time (each is idempotent)."""
        for change in changes:
            image = [change.image] if change.image is not None else []
            try:
                await self.target.put(database, collection, [change.doc_id], image)
            except SourceError as exc:
                return _refused(change.entry, exc)
        return ReplayError(f"{changes[0].entry.describe()} and after: the server refused a batch")

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
            self._cache.clear()
            o = plain(entry.o)
            if self._holds_back(entry, o):
                self.report.skipped["loss"] += 1
                return
            if self._touches_lost(entry, o):
                self.report.skipped["after loss"] += 1
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

    def _touches_lost(self, entry: OplogEntry, o: Mapping[str, Any]) -> bool:
        """A command on a namespace already lost (say, recreated after its drop)."""
        return any(
            self._is_lost(f"{database}.{collection}") for database, collection in touched(entry, o)
        )

    def _selects_in(self, database: str) -> bool:
        names = self.scope.names
        return names is None or any(n.partition(".")[0] == database for n in names)

    def _is_lost(self, ns: str) -> bool:
        return ns in self._lost or ns.partition(".")[0] in self._lost_databases

    def _all_lost(self) -> bool:
        names = self.scope.names
        return bool(names) and names is not None and all(self._is_lost(n) for n in names)


async def _windows(items: AsyncIterator[Any], size: int) -> AsyncIterator[list[Any]]:
    window: list[Any] = []
    async for item in items:
        window.append(item)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def _raw_id(raw: bytes) -> Any:
    return plain(RawBSONDocument(raw, RAW)["_id"])


def _id_of(entry: OplogEntry, document: Mapping[str, Any]) -> Any:
    if "_id" not in document:
        raise ReplayError(f"{entry.describe()}: no _id to apply it to")
    return plain(document["_id"])


def _txn_key(entry: OplogEntry) -> bytes:
    key = entry.txn_key
    if key is None:
        raise ReplayError(f"{entry.describe()}: transaction command without lsid/txnNumber")
    return key


def _write_error(exc: SourceError, inserted: list[Change]) -> ReplayError | None:
    """Name the entry whose insert a bulk write error points at; None without one."""
    cause = exc.__cause__
    if not isinstance(cause, BulkWriteError):
        return None
    errors = cause.details.get("writeErrors") or [{}]
    index = errors[0].get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(inserted):
        return None
    message = errors[0].get("errmsg", str(cause))
    return ReplayError(
        f"{inserted[index].entry.describe()}: the server refused the write: {message}"
    )


def _refused(entry: OplogEntry, exc: SourceError) -> ReplayError:
    return ReplayError(f"{entry.describe()}: the server refused the write: {exc}")
