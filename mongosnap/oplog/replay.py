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
the entries before it. A batch is sent as one delete of the ``_id``s of the
documents it leaves, one insert of those (raw bytes), then one delete of the
``_id``s it deletes. A document is absent between the first two commands: the
target is not meant to be read while a replay runs, and an interrupted replay
is finished by replaying again.

A replay that stops on an entry (one it cannot apply, or a write the server
refuses) leaves every namespace with the whole top-level entries before it
applied and nothing of it or after it. For a refused write, the batch's
documents are put back as they were before the batch (the stored states of
those it replaces are read with the window's prefetch, before they are
deleted) and its steps are written again one top-level entry at a time; the
refused entry's writes are undone.

Stop conditions: ``until`` (inclusive), and ``before_loss``, which leaves each
selected namespace as it was just before the first entry that drops it,
renames it away, replaces it by a rename, or drops its database.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any

import bson
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from .._errors import ArchiveError, MongosnapError, ReplayError, SourceError
from ..clients import MongoSource
from ..source import Source
from .batch import Batch, Change, id_key
from .commands import Skip, apply_command, command_name, losses, touched
from .diff import Unreplayable, apply_update, check_raw_update, is_full_image
from .entry import PLAIN, RAW, OplogEntry, encode, format_ts, parse_entry, plain
from .position import TsLike, as_ts
from .report import ReplayReport
from .scope import Scope, Selector
from .target import ReplayTarget
from .txn import Transactions, applied_separately

DEFAULT_BATCH = 1000  # documents per batch (a delete, an insert, a delete: module docstring)
MAX_DOCUMENT = 16 * 1024 * 1024  # the server refuses a larger document
_ENTRY_FAULTS = (BSONError, RecursionError, UnicodeError, OverflowError)
"""What a hostile entry's values raise while they are decoded or applied."""

Entries = Iterable[Any] | AsyncIterable[Any]


async def replay(
    target: MongoSource | Source,
    entries: Entries,
    *,
    namespaces: Selector = None,
    databases: Mapping[str, str] | None = None,
    until: TsLike | None = None,
    before_loss: bool = False,
    batch_size: int = DEFAULT_BATCH,
    collections: Mapping[str, str] | None = None,
) -> ReplayReport:
    """Replay ``entries`` (in oplog order) onto ``target``; see the module docstring.

    ``target``: a URI, ``host[:port]``, PyMongo ``AsyncMongoClient``, Motor
    client or ``Source``. ``namespaces``: ``db.collection`` names or a
    predicate on them (default: every namespace outside admin, config, local
    and ``system.*``). ``databases``: renaming of database names, as
    ``restore --to-database``. ``collections``: a namespace map, ``db.name``
    (as logged) to the collection of the (renamed) database its entries are
    written to instead (heal replays into a staging copy); the report names
    the logged collection. ``until``: a ``Ts``, bson ``Timestamp`` or aware
    ``datetime`` (the end of its second), inclusive.
    """
    scope = Scope.build(namespaces, databases, collections)
    last = None if until is None else as_ts(until).to_bson()
    async with _open(target) as replay_target:
        engine = Replayer(replay_target, scope, last, before_loss, batch_size)
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
        self._stopped: set[str] = set()  # namespaces stopped on an entry (Unreplayable)
        # (database, collection, _id key) -> the server's bytes, None when deleted
        self._cache: dict[tuple[str, str, bytes], bytes | None] = {}
        self._group = 0  # the top-level entry being applied, numbered

    async def run(self, entries: Entries) -> None:
        try:
            async for window in _windows(_each(entries), self._batch.size):
                parsed = _parse_window(window)
                await self._prefetch([e for e in parsed if isinstance(e, OplogEntry)])
                if not await self._run_window(parsed):
                    break
            await self._flush()
        finally:
            self.report.pending_transactions = self._txns.pending

    async def _run_window(self, entries: list[OplogEntry | MongosnapError]) -> bool:
        """Apply entries in order; False once a stop condition is met."""
        for entry in entries:
            if isinstance(entry, MongosnapError):
                await self._flush()  # the entries before it, whole
                raise entry
            if self.until is not None and entry.ts > self.until:
                self.report.stop = "until"
                return False
            self.report.entries += 1
            self._group += 1
            try:
                await self._apply_top(entry)
            except Unreplayable as exc:
                self._batch.undo(self._group)  # the entry's writes to that collection
                self._stopped.add(exc.ns)
                self.report.stopped[exc.ns] = str(exc)
            except ReplayError:
                self._batch.undo(self._group)
                await self._flush()
                raise
            if self._all_lost():
                self.report.stop = "loss"
                return False
            self.report.last_ts = entry.ts
        return True

    async def _apply_top(self, entry: OplogEntry) -> None:
        """Apply a top-level entry; what its values raise names it."""
        try:
            await self.apply(entry)
        except _ENTRY_FAULTS as exc:
            raise ReplayError(f"{entry.describe()}: {_fault(exc)}") from None

    async def _prefetch(self, entries: list[OplogEntry]) -> None:
        """Read the documents the window's inserts and updates touch, one query
        per collection.

        The cache holds the server's state of those documents (None: absent);
        updates read it, and a batch keeps it as the state to put back should
        the server refuse a write. Flushes keep it current and commands clear
        it. It lives for one window.
        """
        self._cache.clear()
        wanted: dict[tuple[str, str], dict[bytes, Any]] = {}
        for entry in entries:
            doc_id = _target_id(entry)
            if doc_id is _NO_ID or not self.scope.selected(entry.ns) or self._is_lost(entry.ns):
                continue
            if entry.ns in self._stopped:
                continue
            wanted.setdefault(self.scope.target(entry.ns), {})[id_key(doc_id)] = doc_id
        for (database, collection), ids in wanted.items():
            found = await self.target.find_many_raw(database, collection, list(ids.values()))
            for key in ids:
                self._cache[(database, collection, key)] = None
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
        if entry.ns in self._stopped:
            self.report.skipped["after stop"] += 1
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
        self.report.namespaces.add(self.scope.published(entry.database, entry.collection))

    async def _upsert(
        self, entry: OplogEntry, database: str, collection: str, doc_id: Any, raw: bytes
    ) -> None:
        if len(raw) > MAX_DOCUMENT:
            raise ReplayError(
                f"{entry.describe()}: the document would be {len(raw):,} bytes, "
                f"over the server's {MAX_DOCUMENT:,}"
            )
        await self._put(entry, database, collection, doc_id, raw)

    async def _delete(self, entry: OplogEntry, database: str, collection: str, doc_id: Any) -> None:
        await self._put(entry, database, collection, doc_id, None)

    async def _update(self, entry: OplogEntry, database: str, collection: str) -> bool:
        """Write the updated document; False when there is no document to update."""
        try:
            check_raw_update(entry.o)  # repeated names, which decoding merges
        except ReplayError as exc:
            raise ReplayError(f"{entry.describe()}: {exc}") from exc
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
            except Unreplayable as exc:
                stop = Unreplayable(f"{entry.describe()}: {exc}")
                stop.ns = entry.ns
                raise stop from exc
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
        found = await self.target.find_raw(database, collection, doc_id)
        self._cache[(database, collection, key)] = found
        return found

    async def _put(
        self, entry: OplogEntry, database: str, collection: str, doc_id: Any, image: bytes | None
    ) -> None:
        if self._batch.namespace not in (None, (database, collection)) or self._batch.full:
            await self._flush()
        batch, key = self._batch, id_key(doc_id)
        if key not in batch.images and (database, collection, key) in self._cache:
            batch.before.setdefault(key, self._cache[(database, collection, key)])
        batch.put((database, collection), Change(doc_id, image, entry, self._group))

    async def _flush(self) -> None:
        """Send a batch: replace the documents it leaves (delete, then insert them),
        then delete the ones it deletes.

        The stored states of the replaced documents are known first (read now
        if the window's prefetch did not), so that a refused insert can be
        undone (``_recover``); the deleted ones are untouched until it went in.
        """
        batch = self._batch
        if batch.namespace is None:
            return
        database, collection = batch.namespace
        taken, steps, before = batch.take()
        replaced = [change for _, change in taken if change.image is not None]
        deleted = [change.doc_id for _, change in taken if change.image is None]
        await self._read_before(database, collection, replaced, before)
        for key, change in taken:
            self._cache[(database, collection, key)] = change.image
        images = [change.image for change in replaced if change.image is not None]
        try:
            await self.target.put(database, collection, [c.doc_id for c in replaced], images)
            if deleted:
                await self.target.put(database, collection, deleted, [])
        except _REFUSALS as exc:
            _not_an_entry_fault(exc)
            self._cache.clear()
            refused = await self._recover(database, collection, taken, steps, before)
            if refused is not None:
                raise refused from exc

    async def _recover(
        self,
        database: str,
        collection: str,
        taken: list[tuple[bytes, Change]],
        steps: list[Change],
        before: dict[bytes, bytes | None],
    ) -> ReplayError | None:
        """After a refused batch: put its documents back as they were, then write
        its steps again one top-level entry at a time; the first entry the server
        refuses is undone and returned. None when every step went through."""
        ids = {key: change.doc_id for key, change in taken}
        await self._read_before(database, collection, [c for _, c in taken], before)
        state = {key: before[key] for key in ids}
        await self._write(database, collection, ids, state)
        for group in _groups(steps):
            prior = {id_key(c.doc_id): state[id_key(c.doc_id)] for c in group}
            for change in group:
                image = [] if change.image is None else [change.image]
                try:
                    await self.target.put(database, collection, [change.doc_id], image)
                except _REFUSALS as exc:
                    _not_an_entry_fault(exc)
                    await self._write(database, collection, ids, prior)
                    return ReplayError(
                        f"{change.entry.describe()}: the server refused the write: {exc}; "
                        f"{database}.{collection} holds the entries before it, none after"
                    )
                state[id_key(change.doc_id)] = change.image
        return None

    async def _read_before(
        self,
        database: str,
        collection: str,
        changes: list[Change],
        before: dict[bytes, bytes | None],
    ) -> None:
        """Complete ``before`` with the stored states of these documents."""
        unknown = [c.doc_id for c in changes if id_key(c.doc_id) not in before]
        if not unknown:
            return
        before.update(dict.fromkeys(map(id_key, unknown)))
        for raw in await self.target.find_many_raw(database, collection, unknown):
            before[id_key(_raw_id(raw))] = raw

    async def _write(
        self,
        database: str,
        collection: str,
        ids: dict[bytes, Any],
        states: dict[bytes, bytes | None],
    ) -> None:
        """Put documents in the states given (stored states, which the server took before)."""
        images = [image for image in states.values() if image is not None]
        await self.target.put(database, collection, [ids[key] for key in states], images)

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
            if self._touches_stopped(entry, o):
                self.report.skipped["after stop"] += 1
                return
            outcome = await apply_command(self.target, self.scope, entry, o)
            self._count(entry, o, outcome)

    def _count(self, entry: OplogEntry, o: Mapping[str, Any], outcome: str | Skip) -> None:
        if isinstance(outcome, Skip):
            self.report.skipped[outcome.reason] += 1
            return
        self.report.applied[outcome] += 1
        for database, collection in touched(entry, o):
            self.report.namespaces.add(self.scope.published(database, collection))

    async def _apply_ops(self, entry: OplogEntry) -> None:
        ops = entry.o.get("applyOps")
        if not isinstance(ops, list):
            raise ReplayError(f"{entry.describe()}: applyOps is not a list")
        key = entry.txn_key
        if key is None:
            await self._run(entry, ops, "applyOps")
        elif entry.flag("partialTxn") or entry.flag("prepare"):
            self._txns.hold(entry, key, ops)
        elif applied_separately(entry):  # a retryable write's batch, chained but no transaction
            await self._run(entry, ops, "applyOps")
        else:
            await self._run(entry, self._txns.commit(entry, key, ops), "transaction")

    async def _run(self, entry: OplogEntry, ops: list[Any], counted: str) -> None:
        try:
            for op in ops:
                await self.apply(parse_entry(op, ts=entry.ts))
        except Unreplayable as exc:
            if _namespaces(ops, entry.ts) != {exc.ns}:
                raise ReplayError(
                    f"{exc}; the {counted} entry {format_ts(entry.ts)} also writes to other "
                    "namespaces, so the replay cannot stop at that collection alone"
                ) from exc
            raise
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

    def _touches_stopped(self, entry: OplogEntry, o: Mapping[str, Any]) -> bool:
        """A command on a namespace whose replay stopped (its index, its drop)."""
        return any(f"{db}.{name}" in self._stopped for db, name in touched(entry, o))

    def _selects_in(self, database: str) -> bool:
        names = self.scope.names
        return names is None or any(n.partition(".")[0] == database for n in names)

    def _is_lost(self, ns: str) -> bool:
        return ns in self._lost or ns.partition(".")[0] in self._lost_databases

    def _all_lost(self) -> bool:
        names = self.scope.names
        return bool(names) and names is not None and all(self._is_lost(n) for n in names)


async def _windows(items: AsyncIterator[Any], size: int) -> AsyncIterator[list[Any]]:
    """Entries by window; an entry or chunk the source cannot give (ReplayError,
    ArchiveError) ends the last window as its error, after the entries before it."""
    window: list[Any] = []
    try:
        async for item in items:
            window.append(item)
            if len(window) >= size:
                yield window
                window = []
    except (ReplayError, ArchiveError) as exc:
        window.append(exc)
    if window:
        yield window


_REFUSALS = (SourceError, BSONError)
"""A write refused by the server, or by the driver before it was sent."""

_NO_ID = object()


def _not_an_entry_fault(exc: BaseException) -> None:
    """Re-raise an unreachable server or refused credentials: no entry's fault."""
    if isinstance(exc, SourceError) and type(exc) is not SourceError:
        raise exc


def _fault(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to be applied"
    return f"cannot be decoded or applied: {type(exc).__name__}: {str(exc)[:200]}"


def _parse_window(window: list[Any]) -> list[OplogEntry | MongosnapError]:
    """The window's entries; one that cannot be parsed ends it, as its error."""
    parsed: list[OplogEntry | MongosnapError] = []
    for item in window:
        if isinstance(item, MongosnapError):
            parsed.append(item)
            break
        try:
            parsed.append(parse_entry(item))
        except ReplayError as exc:
            parsed.append(exc)
            break
        except _ENTRY_FAULTS as exc:
            parsed.append(ReplayError(f"malformed oplog entry: {_fault(exc)}"))
            break
    return parsed


def _target_id(entry: OplogEntry) -> Any:
    """The _id an i or u entry writes, _NO_ID for other entries, or one without
    (or with a hostile) _id; deletes need no read (``_flush``)."""
    source = entry.o2 if entry.op == "u" else entry.o if entry.op == "i" else None
    try:
        if not source or "_id" not in source:
            return _NO_ID
        return plain(source["_id"])
    except _ENTRY_FAULTS:
        return _NO_ID  # the entry's own application names it


def _namespaces(ops: list[Any], ts: Timestamp) -> set[str] | None:
    """The namespaces an applyOps' operations name; None when one cannot be read."""
    try:
        return {parse_entry(op, ts=ts).ns for op in ops}
    except (ReplayError, *_ENTRY_FAULTS):
        return None


def _groups(steps: list[Change]) -> list[list[Change]]:
    """Steps by top-level entry, in order."""
    groups: list[list[Change]] = []
    for change in steps:
        if groups and groups[-1][0].group == change.group:
            groups[-1].append(change)
        else:
            groups.append([change])
    return groups


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
