"""Build a collection under a temporary name, check it, then rename it into place.

A restored collection must appear complete or not at all: documents go into
``mongosnap_tmp_<hash>_<token>`` (``<hash>`` identifies the real name, so a
staging copy fits whatever name the server accepted and a later run still
recognises it), indexes are built there, counts and checksums are compared
with what the archive promised, and only then does one renameCollection
(without dropTarget, unless the caller asked to replace) make it visible. If
the name was taken meanwhile, the staged copy is dropped and the existing
collection is left alone.

Where the server refuses the rename (FerretDB 1.x for names holding a dot),
the fully checked staging copy is copied into a freshly created collection of
the real name, which is dropped again if the copy fails (docs/heal.md).

Every staging collection is recorded in a StagingLedger (ledger.py) until it
is renamed; the ledger checks at the end of a run that none is left.

Only the run holding the collection's lease (lease.py) drops stale staging
copies of it. A staging copy is created explicitly and its UUID noted; before
the rename the lease is renewed and the UUID checked again: an insert sent
after someone dropped the copy re-creates it implicitly (a new UUID, a
remnant), and such a remnant is never published.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .._aio import shielded
from .._errors import CorruptArchive, SourceError
from ..archive.bsonstream import BsonSplitter
from ..archive.metadata import CollectionMetadata, convert_legacy_index
from ..source import INVALID_NAMESPACE, NOT_IMPLEMENTED, Source, error_code
from .ledger import StagingLedger

log = logging.getLogger("mongosnap.restore")

TEMP_PREFIX = "mongosnap_tmp_"
BUCKETS_PREFIX = "system.buckets."
"""Where a time-series collection NAME keeps its bucket documents."""
BATCH_BYTES = 8 << 20
BATCH_DOCUMENTS = 1000
SETTLE_SECONDS = 30.0
"""How long in-flight inserts may take to end before their staging copy is dropped."""
_HASH = 16
_TOKEN = 6
_NEW_STYLE = re.compile(rf"{TEMP_PREFIX}([0-9a-f]{{{_HASH}}})_[0-9a-f]{{{_TOKEN}}}")
_OLD_STYLE = re.compile(rf"{TEMP_PREFIX}[0-9a-f]{{8}}_(.+)", re.DOTALL)

Limit = Callable[[int, int], None]
"""Called with (documents, bytes) read so far from a member; raises on excess."""

Inserted = Callable[[int, int], None]
"""Called after each acknowledged batch with (documents, bytes) stored so far."""

Guard = Callable[[], Awaitable[None]]
"""Raises unless this run may still publish (its lease is renewed: lease.py)."""


async def _unguarded() -> None:
    return None


def name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH]


def temp_name(name: str) -> str:
    """A staging name of fixed length (37 characters), without a dot, for ``name``."""
    return f"{TEMP_PREFIX}{name_hash(name)}_{secrets.token_hex(_TOKEN // 2)}"


def is_temp_of(candidate: str, name: str) -> bool:
    """Whether ``candidate`` is a staged copy of ``name`` (from any run, any version)."""
    new = _NEW_STYLE.fullmatch(candidate)
    if new:
        return new.group(1) == name_hash(name)
    old = _OLD_STYLE.fullmatch(candidate)  # mongosnap_tmp_<8 hex>_<name>: older versions
    return old is not None and old.group(1) == name


async def drop_stale(
    target: Source, database: str, name: str, present: set[str] | None = None
) -> list[str]:
    """Drop staged copies of ``name`` left by a run that was killed.

    ``present``: the database's collection names if the caller has just listed
    them (a listCollections reads the server's whole catalogue: one is enough).
    """
    if present is None:
        present = await target.collection_names(database)
    stale = [c for c in present if is_temp_of(c, name)]
    for candidate in stale:
        await target.drop(database, candidate)
    return stale


@dataclass(frozen=True)
class Expected:
    """What the archive promises about a collection; None where it says nothing."""

    documents: int | None = None
    bson_bytes: int | None = None
    sha256: str | None = None

    def check_running(self, where: str) -> Limit:
        """A Limit that stops at the first document or byte beyond the promise."""

        def limit(documents: int, size: int) -> None:
            if self.documents is not None and documents > self.documents:
                raise CorruptArchive(
                    f"{where}: more than the {self.documents} documents the manifest lists"
                )
            if self.bson_bytes is not None and size > self.bson_bytes:
                raise CorruptArchive(
                    f"{where}: more than the {self.bson_bytes} bytes the manifest lists"
                )

        return limit


def _unlimited(documents: int, size: int) -> None:
    return None


def _unobserved(documents: int, size: int) -> None:
    return None


class _Pool:
    """At most ``limit`` inserts in flight; the first failure is raised.

    With ``slots`` (shared by the collections a restore loads at once), each
    insert also holds one of them while in flight, so the total in flight,
    and the memory the batches hold, stays bounded however many collections
    load together.
    """

    def __init__(self, limit: int, slots: asyncio.Semaphore | None = None) -> None:
        self.limit = limit
        self.slots = slots
        self.pending: set[asyncio.Task[None]] = set()

    async def submit(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            while len(self.pending) >= self.limit:
                await self._reap(asyncio.FIRST_COMPLETED)
            await self._take_slot()
        except BaseException:
            work.close()  # never started: nothing was sent
            raise
        task = asyncio.ensure_future(work)
        if self.slots is not None:
            task.add_done_callback(lambda _: self._give_slot())
        self.pending.add(task)

    async def _take_slot(self) -> None:
        """Wait for a shared slot; a failure of ours that ended meanwhile is raised."""
        if self.slots is None:
            return
        await self.slots.acquire()
        try:
            finished = {t for t in self.pending if t.done()}
            self.pending -= finished
            for task in finished:
                task.result()
        except BaseException:
            self._give_slot()
            raise

    def _give_slot(self) -> None:
        assert self.slots is not None
        self.slots.release()

    async def drain(self) -> None:
        while self.pending:
            await self._reap(asyncio.FIRST_EXCEPTION)

    async def _reap(self, when: str) -> None:
        done, self.pending = await asyncio.wait(self.pending, return_when=when)
        for task in done:
            task.result()

    async def settle(self) -> None:
        """Let in-flight inserts end before anything is dropped.

        An insert already sent is executed by the server even if we stop
        waiting, and would re-create a collection dropped before it lands; so
        they are awaited (for SETTLE_SECONDS at most), not cancelled.
        """
        if not self.pending:
            return
        done, late = await asyncio.wait(self.pending, timeout=SETTLE_SECONDS)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: the first failure was already raised
        for task in late:
            task.cancel()
        if late:
            log.warning(
                "%d inserts still in flight after %ss; abandoned", len(late), SETTLE_SECONDS
            )
            await asyncio.wait(late, timeout=1.0)
        self.pending.clear()


class StagedCollection:
    """One collection being restored; invisible under its real name until publish()."""

    def __init__(
        self,
        target: Source,
        database: str,
        name: str,
        *,
        workers: int = 4,
        ledger: StagingLedger | None = None,
        slots: asyncio.Semaphore | None = None,
        guard: Guard = _unguarded,
    ) -> None:
        self.target = target
        self.database = database
        self.name = name
        self.temp = temp_name(name)
        self.workers = workers
        self.slots = slots
        """Insert slots shared with the other collections of the run (see _Pool)."""
        self.ledger = ledger if ledger is not None else StagingLedger()
        self.guard = guard
        self.uuid = ""
        """The staging collection's UUID as created; empty if the server shows none."""
        self.options: dict[str, Any] | None = None
        self.timeseries = False
        """A time-series collection: its documents are buckets, staged in
        ``system.buckets.<temp>`` and published by copy (see _publish_timeseries)."""
        self.documents = 0
        self.bytes = 0
        self.indexes = 0
        self.acknowledged = 0
        self.acknowledged_bytes = 0
        self._inserted: Inserted = _unobserved
        self._specs: list[dict[str, Any]] = []
        self._digest = hashlib.sha256()
        self.changed = False
        """Set when the checked copy was changed before publishing (heal's oplog
        replay): the copy fallback then copies what it holds now."""

    @property
    def where(self) -> str:
        return f"{self.database}.{self.name}"

    async def prepare(self, metadata: CollectionMetadata | None) -> None:
        """Create the staging collection, with the archive's options if known yet.

        A time-series one is created as such, so that a server without time
        series refuses it here, before any bucket is read."""
        self.options = dict(metadata.options) if metadata else None
        self.timeseries = _is_timeseries(self.options)
        # Tracked before the command is sent: a create cancelled in flight may
        # still be executed by the server.
        self.ledger.track(self.database, self.temp)
        await self._create(self.temp, self.options or {})
        self.uuid = await self._uuid(self.temp)

    async def _create(self, name: str, options: dict[str, Any]) -> None:
        try:
            await self.target.create_collection(self.database, name, options)
        except SourceError as exc:
            if "timeseries" not in options or error_code(exc) != NOT_IMPLEMENTED:
                raise
            raise SourceError(
                f"{self.where} is a time-series collection; this server does not support them"
                f" ({exc})"
            ) from exc

    def _data(self, name: str) -> str:
        """The collection that holds ``name``'s documents (its buckets for time series)."""
        return BUCKETS_PREFIX + name if self.timeseries else name

    async def _uuid(self, name: str) -> str:
        spec = await self.target.collection(self.database, name)
        return spec.uuid if spec is not None else ""

    async def _check_own(self) -> None:
        """Refuse to publish a staging copy that is not the one we created.

        Someone dropped it meanwhile (an older mongosnap, a person): a later
        insert re-created it with part of the documents, yet all of ours were
        acknowledged. The lease is renewed first, so that no other run of
        this version drops it between this check and the rename.
        """
        await self.guard()
        if self.uuid and await self._uuid(self.temp) != self.uuid:
            raise SourceError(
                f"{self.where}: its staging copy was dropped by someone else during "
                "the restore; not published"
            )

    async def load(
        self,
        chunks: AsyncIterable[bytes],
        limit: Limit = _unlimited,
        inserted: Inserted = _unobserved,
    ) -> None:
        """Insert the documents of one ``.bson`` stream, as raw bytes, in batches.

        ``limit`` sees the running totals before each batch is sent, so an
        archive holding more than it promised stops at the first excess;
        ``inserted`` sees the stored totals after each batch (progress).
        """
        self._inserted = inserted
        capped = bool((self.options or {}).get("capped"))
        pool = _Pool(1 if capped else self.workers, self.slots)  # capped: kept in order
        splitter = BsonSplitter()
        batch: list[bytes] = []
        size = fed = 0
        try:
            async for chunk in chunks:
                fed += len(chunk)
                self._digest.update(chunk)
                documents = splitter.feed(chunk)
                limit(splitter.documents, fed)
                for document in documents:
                    batch.append(document)
                    size += len(document)
                    if size >= BATCH_BYTES or len(batch) >= BATCH_DOCUMENTS:
                        await pool.submit(self._insert(batch, size))
                        batch, size = [], 0
            splitter.close()
            if batch:
                await pool.submit(self._insert(batch, size))
            await pool.drain()
        except BaseException:
            await shielded(pool.settle())
            raise
        self.documents, self.bytes = splitter.documents, splitter.bytes

    async def _insert(self, documents: list[bytes], size: int) -> None:
        """Insert one batch of ``size`` bytes; count what the server acknowledged."""
        stored = await self.target.insert_raw(self.database, self._data(self.temp), documents)
        self.acknowledged += stored  # after the await: concurrent batches add up safely
        self.acknowledged_bytes += size
        self._inserted(self.acknowledged, self.acknowledged_bytes)

    async def apply_metadata(self, metadata: CollectionMetadata) -> None:
        """Options that arrive after the documents (a legacy archive's member order)."""
        options = dict(metadata.options)
        if self.options is None and options:
            await self._recreate_with(options)
        self.options = options
        self.timeseries = _is_timeseries(options)

    async def _recreate_with(self, options: dict[str, Any]) -> None:
        """Options can only be set at creation: copy into a new staging collection."""
        fresh = temp_name(self.name)
        self.ledger.track(self.database, fresh)
        await self._create(fresh, options)
        fresh_uuid = await self._uuid(fresh)
        await self._copy(self.temp, BUCKETS_PREFIX + fresh if _is_timeseries(options) else fresh)
        old, self.temp, self.uuid = self.temp, fresh, fresh_uuid
        await self.ledger.remove(self.target, self.database, old)  # the sweep checks it

    async def _copy(self, source: str, target: str) -> int:
        """Copy every document of ``source`` into ``target`` as raw bytes; how many.

        Each insert runs in the pool so that an interruption waits for it to
        land before anything is dropped.
        """
        copied = 0
        pool = _Pool(1)

        async def insert(documents: list[bytes]) -> None:
            nonlocal copied
            copied += await self.target.insert_raw(self.database, target, documents)

        try:
            async for batch in self.target.raw_batches(self.database, source):
                documents = BsonSplitter().feed(batch)
                if documents:
                    await pool.submit(insert(documents))
            await pool.drain()
        except BaseException:
            await shielded(pool.settle())
            raise
        return copied

    async def finish(self, metadata: CollectionMetadata | None, expected: Expected) -> None:
        """Build indexes and check the staged copy against the archive's promises."""
        self._check(expected)
        # The server's acknowledgements, not a count query: counting scans the
        # whole collection on some servers (FerretDB), which doubled heal times.
        if self.acknowledged != self.documents:
            raise CorruptArchive(
                f"{self.where}: {self.acknowledged} documents stored, {self.documents} read"
            )
        self._specs = index_specs(metadata)
        if not self.timeseries:  # a time-series one gets them at publish (_publish_by_copy)
            await self.target.create_indexes(self.database, self.temp, self._specs)
        self.indexes = len(self._specs)

    def _check(self, expected: Expected) -> None:
        if expected.documents is not None and expected.documents != self.documents:
            raise CorruptArchive(
                f"{self.where}: {self.documents} documents, the manifest says {expected.documents}"
            )
        if expected.bson_bytes is not None and expected.bson_bytes != self.bytes:
            raise CorruptArchive(
                f"{self.where}: {self.bytes} bytes, the manifest says {expected.bson_bytes}"
            )
        if expected.sha256 is not None and expected.sha256 != self._digest.hexdigest():
            raise CorruptArchive(f"{self.where}: checksum differs from the manifest")

    async def publish(self, *, replace: bool = False) -> bool:
        """Rename into place; False (and nothing changed) if the name is taken."""
        await self._check_own()
        if self.timeseries:  # the server cannot rename a time-series collection
            return await self._publish_by_copy(replace)
        try:
            renamed = await self.target.rename(self.database, self.temp, self.name, replace=replace)
        except SourceError as exc:
            if error_code(exc) != INVALID_NAMESPACE:
                raise
            log.warning(
                "%s refuses to rename into %s: copying instead", self.target.hosts, self.where
            )
            return await self._publish_by_copy(replace)
        if renamed:
            self.ledger.forget(self.database, self.temp)
            self.ledger.published.append(self.where)
            return True
        await self.discard()
        return False

    async def _publish_by_copy(self, replace: bool) -> bool:
        """The fallback: create the real name, copy the checked staging copy into it.

        The real name is visible while the copy runs; if anything fails or the
        run is interrupted, it is dropped again (it did not exist before). A
        time-series collection is created with its options and its buckets are
        copied into ``system.buckets.NAME``, as mongorestore inserts them.
        """
        if replace:
            await self.target.drop(self.database, self.name)
        self.ledger.track(self.database, self.name)
        if not await self.target.create_new(self.database, self.name, self.options or {}):
            self.ledger.forget(self.database, self.name)  # someone else's: never ours to drop
            await self.discard()
            return False
        try:
            documents, specs = await self._contents()
            copied = await self._copy(self._data(self.temp), self._data(self.name))
            if copied != documents:
                raise CorruptArchive(f"{self.where}: {copied} documents copied of {documents}")
            await self.target.create_indexes(self.database, self.name, specs)
        except BaseException:
            await shielded(self._drop_real())
            raise
        self.ledger.forget(self.database, self.name)
        self.ledger.published.append(self.where)
        await self.discard()
        return True

    async def _contents(self) -> tuple[int, list[dict[str, Any]]]:
        """The documents and index specs the copy must carry: the checked ones,
        or, once ``changed``, what the staging copy holds now."""
        if not self.changed:
            return self.documents, self._specs
        reply = await self.target.raw_command(self.database, {"count": self._data(self.temp)})
        indexes = await self.target.indexes(self.database, self.temp)
        specs = [convert_legacy_index(ix) for ix in indexes if ix.get("name") != "_id_"]
        return int(reply["n"]), specs

    async def _drop_real(self) -> None:
        if await self.ledger.remove(self.target, self.database, self.name):
            self.ledger.forget(self.database, self.name)

    async def discard(self) -> None:
        """Drop the staging collection, even while being cancelled, in bounded time."""
        await shielded(self._drop_temp())

    async def _drop_temp(self) -> None:
        # Kept in the ledger after the drop: the sweep checks it stayed dropped.
        if (self.database, self.temp) in self.ledger.live:
            await self.ledger.remove(self.target, self.database, self.temp)


def index_specs(metadata: CollectionMetadata | None) -> list[dict[str, Any]]:
    """The indexes a restore builds: the archive's, without the server's own ``_id_``."""
    return [i for i in (metadata.indexes if metadata else []) if i.get("name") != "_id_"]


def _is_timeseries(options: dict[str, Any] | None) -> bool:
    return bool(options) and "timeseries" in (options or {})
