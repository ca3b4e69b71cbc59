"""The restore engine: put chosen collections of one archive into one database.

Restore and heal both call it with a Selection (which collections they want)
and get one CollectionOutcome per collection back; ``plan()`` answers the same
question without touching the database (dry runs).

Two ways to read an archive:

- with a manifest (docs/format.md), each wanted collection is fetched alone:
  one ranged read of its two members, never the whole archive, checked against
  the manifest's count, size and SHA-256 while it streams and before it
  becomes visible; each collection succeeds or fails on its own (small
  collections adjacent in the archive share one read of their span, see
  WINDOW_BYTES; each still checks its own slice);
- without one (a legacy ``tar -czf dump`` archive), the archive is streamed
  once; wanted collections are staged as their members pass by and become
  visible only after the archive has been read to its end-of-archive. A fault
  in the archive itself fails every collection staged from it.

Either way a collection is built under a temporary name and renamed into
place (staging.py), so readers see it complete or not at all, and only while
holding its lease (lease.py): a collection another run is restoring is left
to that run and reported ``busy``.

With ``before_publish`` (heal's oplog replay), the collections of an archive
with a manifest are all staged and checked first, still under their leases;
the hook then works on the staging copies, and only after it are they
published. Readers see each collection once, in the state the hook left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from .._aio import shielded
from .._errors import (
    ArchiveError,
    CorruptArchive,
    MongosnapError,
    ServerUnreachable,
    StorageError,
    UnsafeArchive,
)
from ..archive.bsonstream import BsonSplitter
from ..archive.manifest import COMPLETE, CollectionEntry, MemberRange
from ..archive.metadata import MAX_METADATA_BYTES, CollectionMetadata, parse_metadata
from ..archive.names import (
    Kind,
    collection_name,
    is_shortened,
    parse_member_name,
    shortened_name,
)
from ..archive.reader import TarMember, member_body, read_archive, read_body
from ..archive.tar import member_length
from ..catalog import ArchiveInfo
from ..codecs import get_codec
from ..progress import Progress, ProgressCallback, Stage, ignore
from ..source import Source, select
from ..storage import Storage
from .layouts import (
    SYSTEM_INDEXES,
    DumpLayout,
    collection_of,
    parse_or_broken,
)
from .lease import LEASES, Leases
from .ledger import StagingLedger
from .staging import Expected, Inserted, Limit, StagedCollection, drop_stale, index_specs

log = logging.getLogger("mongosnap.restore")
T = TypeVar("T")

BeforePublish = Callable[[list[StagedCollection]], Coroutine[Any, Any, None]]
"""Called with the checked staging copies before any of them is published."""

LEGACY_FREE_DOCUMENTS = 10_000
LEGACY_DOCUMENTS_PER_BYTE = 2
"""A legacy archive (no manifest) may yield at most LEGACY_FREE_DOCUMENTS plus
this many documents per compressed byte read so far: real dumps stay below one
document per compressed byte; a gzip of tiny repeated documents gives about 60
(docs/heal.md, bounds)."""
PARALLEL_COLLECTIONS = 2
"""Collections of an archive with a manifest that restore loads at once. They
share the ``workers`` insert slots, so the batches in flight stay as bounded
as for one collection; the second keeps the server busy while the first is
set up, checked and renamed. Heal loads one at a time, so that a connection
reset fails only the collection it hit (docs/heal.md)."""
WINDOW_BYTES = 1 << 20
"""Collections adjacent in the archive whose ranges together span at most this
many compressed bytes are fetched with one ranged read (an S3 GET costs 2-5 ms
of client CPU and a round trip: more than a small collection's insert). The
window is held in memory until each of its collections has taken its slice;
restore loads collections in archive order, so at most ``parallel`` + 1
windows are alive at once."""
LEGACY_STEP = 16 * 1024
"""A legacy archive is fed to the reader in slices this long, so the count of
compressed bytes read is never far ahead of what was decompressed."""


class Status(StrEnum):
    """What happened to one collection."""

    RESTORED = "restored"
    EXISTS = "exists"
    """The name exists in the target and the caller did not ask to replace it."""
    REAPPEARED = "reappeared"
    """An application created the name while it was being restored; left alone."""
    FAILED = "failed"
    """Could not be restored from this archive; ``error`` says why."""
    BUSY = "busy"
    """Another run (heal, restore) holds its lease and is restoring it; left to it."""
    WOULD_RESTORE = "would restore"


@dataclass(frozen=True)
class CollectionOutcome:
    """What happened to one collection.

    ``bytes_fetched`` is what was read for this collection: its own range in an
    archive with a manifest, the whole archive (shared with the collections
    restored alongside) for a legacy one.
    """

    database: str
    name: str
    status: Status
    archive: str
    documents: int = 0
    indexes: int = 0
    bytes_fetched: int = 0
    archive_size: int = 0
    duration: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Selection:
    """Which collections of one database of the archive are wanted.

    ``names`` None means every name; patterns are shell-style, on names.
    """

    database: str
    names: frozenset[str] | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def wants(self, database: str, name: str) -> bool:
        if database != self.database or (self.names is not None and name not in self.names):
            return False
        return bool(select([name], self.include, self.exclude))


class _Window:
    """Compressed bytes [start, end) of the archive, read once for the adjacent
    small collections inside it; freed when the last of them is done.

    If the shared read fails, each collection reads its own range instead, so
    a failure stays that collection's own, as without windows.
    """

    def __init__(self, start: int, end: int, users: int) -> None:
        self.start = start
        self.end = end
        self.users = users
        self._task: asyncio.Future[bytes] | None = None

    async def slice(
        self, read: Callable[[], Coroutine[Any, Any, bytes]], start: int, end: int
    ) -> bytes | None:
        """The bytes [start, end), or None when the shared read failed."""
        if self._task is None:
            self._task = asyncio.ensure_future(read())
        try:
            data = await asyncio.shield(self._task)
        except StorageError:
            return None
        if len(data) != self.end - self.start:
            return None
        return data[start - self.start : end - self.start]

    async def leave(self) -> None:
        """One collection is done with the window; the last one frees its bytes."""
        self.users -= 1
        if self.users == 0:
            await self.close()

    async def close(self) -> None:
        """Drop the bytes; cancel a read nobody waits for (a run cut short)."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: reported, if at all, by the collections


@dataclass(frozen=True)
class _Staged:
    """A collection loaded and checked under a staging name, its lease still held."""

    entry: CollectionEntry
    staged: StagedCollection
    started: float
    fetched: int


@dataclass
class _Legacy:
    """The state of one pass over a legacy archive."""

    staged: dict[str, StagedCollection] = field(default_factory=dict)
    metadata: dict[str, CollectionMetadata] = field(default_factory=dict)
    outcomes: list[CollectionOutcome] = field(default_factory=list)
    documents: int = 0
    layout: DumpLayout = field(default_factory=DumpLayout)
    names: dict[tuple[str, str], str] = field(default_factory=dict)
    """(database, stem) of shortened file names -> the real collection names
    their metadata gave (docs/format.md, section 15)."""
    deferred: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Shortened data files met before their metadata -> (database, stem)."""


@dataclass
class _Dumped:
    """A wanted dump file of a legacy archive: its collection's real name, its
    kind, and its content (gunzipped for ``mongodump --gzip``)."""

    member: TarMember
    kind: Kind
    name: str
    compressed: bool
    head: bytes | None = None
    """A metadata file's content, read ahead to learn a shortened name."""

    def chunks(self) -> AsyncIterator[bytes]:
        return member_body(self.member, self.compressed)

    async def content(self) -> bytes:
        """A metadata file's whole content (bounded)."""
        if self.head is not None:
            return self.head
        return await read_body(self.member, self.compressed, MAX_METADATA_BYTES)

    async def metadata(self) -> CollectionMetadata:
        return parse_metadata(await self.content(), member=self.member.name)


class Engine:
    """Restores collections of one archive into one target database."""

    def __init__(
        self,
        storage: Storage,
        info: ArchiveInfo,
        target: Source,
        to_database: str,
        *,
        workers: int = 4,
        replace: bool = False,
        ledger: StagingLedger | None = None,
        progress: ProgressCallback = ignore,
        parallel: int = 1,
        present: set[str] | None = None,
    ) -> None:
        self.storage = storage
        self.info = info
        self.target = target
        self.to_database = to_database
        self.workers = workers
        self.replace = replace
        self.parallel = parallel
        """Collections loaded at once from an archive with a manifest."""
        self.ledger = ledger if ledger is not None else StagingLedger()
        self.bytes_fetched = 0
        """Bytes read from storage by this engine, all reads together."""
        self.progress = progress
        self._slots = asyncio.Semaphore(workers)
        """Insert batches in flight, all collections together."""
        self._totals: dict[str, tuple[int | None, int | None]] = {}
        """Collections that reported STARTED and await their last event: known totals."""
        self._present = present
        """The target's collection names, listed once (see target_names)."""
        self._listing = asyncio.Lock()
        self.leases = Leases(target, to_database)
        self.held: dict[str, set[str]] = {}
        """What a pass over a legacy archive saw: its databases and their
        collections (restore names them when its selection matched nothing)."""

    def entries(self, selection: Selection) -> list[CollectionEntry] | None:
        """The manifest's wanted entries; None when the archive has no manifest.

        Views and time-series collections are left out (docs/heal.md, limits).
        """
        if self.info.manifest is None:
            return None
        found = []
        for entry in self.info.manifest.collections:
            if not selection.wants(entry.database, entry.name):
                continue
            if entry.status != COMPLETE:  # vanished during the backup: not a snapshot
                log.info(
                    "%s.%s is %s in %s", entry.database, entry.name, entry.status, self.info.key
                )
                continue
            if entry.name == LEASES:  # another run's bookkeeping, caught by a backup
                continue
            if entry.type != "collection":
                log.warning("%s.%s is a %s: not restored", entry.database, entry.name, entry.type)
                continue
            found.append(entry)
        return found

    async def restore(
        self, selection: Selection, *, before_publish: BeforePublish | None = None
    ) -> list[CollectionOutcome]:
        """Restore the selected collections; one outcome each, failures included.

        Raises an ArchiveError only for a fault of the whole archive (its
        embedded manifest, or the stream of a legacy archive).
        ``before_publish`` (archives with a manifest only; a legacy archive has
        no oplog window) sees every collection staged and checked, before any
        is published; whatever it raises discards them all.
        """
        try:
            return await self._restore(selection, before_publish)
        finally:
            await shielded(self.leases.close())

    async def _restore(
        self, selection: Selection, before_publish: BeforePublish | None
    ) -> list[CollectionOutcome]:
        entries = self.entries(selection)
        if entries is None:
            return await self._restore_streaming(selection)
        if entries and not self.info.partial:  # a partial one was read from that member
            await self.check_embedded_manifest()
        self.leases.plan(entry.name for entry in entries)  # their leases taken by groups
        if before_publish is not None:
            return await self._restore_held(entries, before_publish)
        windows = _windows(entries)
        try:
            work = [self._windowed_entry(entry, windows.get(entry.name)) for entry in entries]
            return await _bounded(work, self.parallel)
        finally:
            for window in set(windows.values()):
                await window.close()

    async def _restore_held(
        self, entries: list[CollectionEntry], before_publish: BeforePublish
    ) -> list[CollectionOutcome]:
        """Stage every entry, run the hook on the staging copies, then publish them.

        The leases of the staged collections are held (and renewed) until each
        is published or discarded; an interruption anywhere discards every
        copy not yet published.
        """
        held: list[_Staged] = []
        windows = _windows(entries)
        try:
            work = [self._staged_entry(e, windows.get(e.name), held) for e in entries]
            results = await _bounded(work, self.parallel)
            if held:
                await before_publish([h.staged for h in held])
            outcomes = []
            for result in results:
                if isinstance(result, _Staged):
                    held.remove(result)
                    result = await self._publish_held(result)
                outcomes.append(result)
            return outcomes
        finally:
            for window in set(windows.values()):
                await window.close()
            for left in held:
                await left.staged.discard()
                await shielded(self.leases.release(left.entry.name))

    async def _staged_entry(
        self, entry: CollectionEntry, window: _Window | None, held: list[_Staged]
    ) -> CollectionOutcome | _Staged:
        """One entry loaded and checked, not published; recorded in ``held``
        as soon as it is, so that an interruption of the others discards it."""
        try:
            result = await self._restore_leased(entry, window, publish=False)
        except BaseException:
            await shielded(self.leases.release(entry.name))
            raise
        finally:
            if window is not None:
                await window.leave()
        if isinstance(result, _Staged):
            held.append(result)
        else:
            await shielded(self.leases.release(entry.name))
        return result

    async def _publish_held(self, held: _Staged) -> CollectionOutcome:
        """Publish a staged collection; its lease is given back either way."""
        name, staged = held.entry.name, held.staged
        try:
            published = await staged.publish(replace=self.replace)
        except MongosnapError as exc:
            await staged.discard()
            return await self._failed(name, held.started, exc, held.fetched)
        except BaseException:
            await staged.discard()
            raise
        finally:
            await shielded(self.leases.release(name))
        status = Status.RESTORED if published else Status.REAPPEARED
        return self._outcome(name, status, held.started, staged, held.fetched)

    async def plan(self, selection: Selection) -> list[CollectionOutcome]:
        """What restore() would restore, with the same document and index counts.

        Touches no database. Reads each collection's metadata member (one small
        ranged read) or, for a legacy archive, the whole archive once.
        """
        entries = self.entries(selection)
        if entries is None:
            return await self._plan_streaming(selection)
        planned = []
        for entry in entries:
            async with contextlib.aclosing(self._read_ranges(entry.metadata)) as members:
                metadata = [await _metadata(m) async for m in members]
            indexes = len(index_specs(metadata[0] if metadata else None))
            planned.append(self._planned(entry.name, entry.documents, indexes))
        return planned

    async def check_embedded_manifest(self) -> None:
        """CorruptArchive unless the manifest inside the archive equals the sidecar.

        One small ranged read (docs/format.md, ordering rules: what a reader trusts).
        """
        manifest = self.info.manifest
        assert manifest is not None
        member = manifest.manifest
        async with contextlib.aclosing(self._read_ranges(member)) as members:
            found = [(m.name, await m.read(member.size)) async for m in members]
        if found != [(member.name, manifest.to_json())]:
            raise CorruptArchive("the manifest inside the archive differs from its sidecar")

    async def oplog_entries(self) -> AsyncIterator[bytes]:
        """The raw entries of the archive's ``dump/oplog.bson``, in oplog order.

        One ranged read of the member the manifest's ``oplog`` window names;
        each entry is validated as BSON before it is handed out, and the count
        and SHA-256 are checked against the window at the end (CorruptArchive).
        Nothing when the archive has no window.
        """
        window = self.info.manifest.oplog if self.info.manifest is not None else None
        if window is None:
            return
        async with contextlib.aclosing(
            self.checked_documents(window.member, window.entries, window.sha256)
        ) as entries:
            async for entry in entries:
                yield entry

    async def user_documents(self, database: str) -> dict[str, list[bytes]]:
        """The archive's users and roles of ``database`` (backup --users-and-roles),
        by admin collection, each member checked as the oplog's is; empty without."""
        found: dict[str, list[bytes]] = {}
        manifest = self.info.manifest
        for auth in manifest.users if manifest is not None else ():
            if auth.database == database:
                found[auth.collection] = [
                    document
                    async for document in self.checked_documents(
                        auth.member, auth.documents, auth.sha256
                    )
                ]
        return found

    async def checked_documents(
        self, member_range: MemberRange, documents: int, sha256: str
    ) -> AsyncGenerator[bytes, None]:
        """The BSON documents of one member, from one ranged read, each validated;
        their count and SHA-256 checked against the manifest's at the end."""
        splitter = BsonSplitter(max_documents=documents, max_bytes=member_range.size)
        digest = hashlib.sha256()
        async with contextlib.aclosing(self._read_ranges(member_range)) as members:
            async for member in members:
                if member.name != member_range.name or member.size != member_range.size:
                    raise CorruptArchive(
                        f"{self.info.key}: expected {member_range.name} "
                        f"({member_range.size} bytes) in its range, found {member.name!r}"
                    )
                async for chunk in member.chunks():
                    digest.update(chunk)
                    for entry in splitter.feed(chunk):
                        yield entry
        splitter.close()
        if splitter.documents != documents or digest.hexdigest() != sha256:
            raise CorruptArchive(
                f"{self.info.key}: {member_range.name} holds {splitter.documents} documents "
                f"or a SHA-256 other than the manifest's ({documents})"
            )

    async def collection_documents(self, entry: CollectionEntry) -> AsyncIterator[bytes]:
        """The raw documents of one collection's data member, in archive order.

        One ranged read of that member alone (not its metadata, not the rest of
        the archive); the count, size and SHA-256 are checked against the
        manifest at its end (CorruptArchive). Nothing for a collection without data.
        """
        if entry.bson is None:
            return
        where = f"{entry.database}.{entry.name}"
        splitter = BsonSplitter(max_documents=entry.documents, max_bytes=entry.bson_bytes)
        digest = hashlib.sha256()
        async with contextlib.aclosing(self._read_ranges(entry.bson)) as members:
            async for member in members:
                if member.name != entry.bson.name or member.size != entry.bson_bytes:
                    raise CorruptArchive(f"{where}: unexpected member {member.name!r} in its range")
                async for chunk in member.chunks():
                    digest.update(chunk)
                    for document in splitter.feed(chunk):
                        yield document
        splitter.close()
        if splitter.documents != entry.documents or digest.hexdigest() != entry.sha256:
            raise CorruptArchive(
                f"{where}: {splitter.documents} documents or a SHA-256 other than the "
                f"manifest's ({entry.documents})"
            )

    def _read_ranges(
        self, *ranges: MemberRange, window: _Window | None = None
    ) -> AsyncGenerator[TarMember, None]:
        """The members of consecutive ranges, from one ranged read (or their
        slice of a window read for several), bounded to their size."""
        start, end = ranges[0].offset, ranges[-1].end
        chunks = self._read(start, end) if window is None else self._windowed(window, start, end)
        return read_archive(
            chunks,
            codec=get_codec(self.info.codec),
            require_end=False,
            max_total_size=sum(member_length(r.name, r.size) for r in ranges),
        )

    def read_member(self, member: MemberRange) -> AsyncGenerator[TarMember, None]:
        """One member of an archive with a manifest, read on its own (heal's
        --restore-missing reads a collection's documents so)."""
        return self._read_ranges(member)

    def _read(self, start: int, end: int) -> AsyncIterator[bytes]:
        return self._counted(self.storage.read(self.info.key, start, end))

    async def _windowed(self, window: _Window, start: int, end: int) -> AsyncIterator[bytes]:
        """Our slice of the window; our own ranged read if the window's failed."""

        async def whole() -> bytes:
            return b"".join([chunk async for chunk in self._read(window.start, window.end)])

        data = await window.slice(whole, start, end)
        if data is None:
            async for chunk in self._read(start, end):
                yield chunk
        else:
            yield data

    # -- with a manifest: one ranged read per collection, each on its own

    async def _windowed_entry(
        self, entry: CollectionEntry, window: _Window | None
    ) -> CollectionOutcome:
        if window is None:
            return await self._restore_entry(entry)
        try:
            return await self._restore_entry(entry, window)
        finally:
            await window.leave()

    async def _restore_entry(
        self, entry: CollectionEntry, window: _Window | None = None
    ) -> CollectionOutcome:
        try:
            outcome = await self._restore_leased(entry, window)
        finally:
            await shielded(self.leases.release(entry.name))  # others need not wait for our end
        assert isinstance(outcome, CollectionOutcome)  # published: never handed back staged
        return outcome

    async def _restore_leased(
        self, entry: CollectionEntry, window: _Window | None = None, *, publish: bool = True
    ) -> CollectionOutcome | _Staged:
        """Claim, stage, load and check one collection, then publish it (or,
        with ``publish`` False, hand it back staged, lease held)."""
        started = time.monotonic()
        ranges = [entry.metadata] if entry.bson is None else [entry.metadata, entry.bson]
        fetched = ranges[-1].end - ranges[0].offset
        try:
            refused = await self._claim(entry.name)
            if refused is not None:
                return self._outcome(entry.name, refused, started)
            staged = self._stage(entry.name)
        except MongosnapError as exc:
            return await self._failed(entry.name, started, exc)
        self._started(entry.name, entry.documents, entry.bson_bytes)
        try:
            await self._load_entry(entry, ranges, staged, window)
            if not publish:
                return _Staged(entry, staged, started, fetched)
            published = await staged.publish(replace=self.replace)
        except MongosnapError as exc:
            await staged.discard()
            return await self._failed(entry.name, started, exc, fetched)
        except BaseException:
            await staged.discard()
            raise
        status = Status.RESTORED if published else Status.REAPPEARED
        return self._outcome(entry.name, status, started, staged, fetched)

    async def _load_entry(
        self,
        entry: CollectionEntry,
        ranges: list[MemberRange],
        staged: StagedCollection,
        window: _Window | None = None,
    ) -> None:
        """Load one collection into its staging copy and check it (not published)."""
        where = f"{entry.database}.{entry.name}"
        expected = Expected(entry.documents, entry.bson_bytes, entry.sha256)
        metadata = None
        async with contextlib.aclosing(self._read_ranges(*ranges, window=window)) as members:
            async for member in members:
                if member.name == entry.metadata.name:
                    metadata = await _metadata(member)
                    await staged.prepare(metadata)
                elif entry.bson is not None and member.name == entry.bson.name:
                    if metadata is None:
                        raise CorruptArchive(f"{member.name} comes before its metadata")
                    if member.size != entry.bson_bytes:
                        raise CorruptArchive(
                            f"{where}: member holds {member.size} bytes, "
                            f"the manifest says {entry.bson_bytes}"
                        )
                    await staged.load(
                        member.chunks(), expected.check_running(where), self._batches(entry.name)
                    )
                else:
                    raise CorruptArchive(f"unexpected member {member.name!r} in the range")
        if metadata is None:
            raise CorruptArchive(f"{entry.metadata.name} missing from its range")
        await staged.finish(metadata, expected)

    # -- without a manifest: stream the archive once

    def _open_stream(self) -> AsyncGenerator[TarMember, None]:
        return read_archive(self._counted(_sliced(self.storage.read(self.info.key))))

    async def _dumped(self, selection: Selection, state: _Legacy) -> AsyncGenerator[_Dumped, None]:
        """The wanted dump files of a legacy archive, in archive order.

        ``tar -czf dump`` orders a folder's files as the file system lists
        them, so a shortened data file may come before the metadata that names
        it: such files are left for a second read of the archive, once every
        name is known (only when one of them is wanted).
        """
        async with contextlib.aclosing(self._open_stream()) as members:
            async for member in members:
                if await _layout_member(member, selection, state.layout):
                    continue
                wanted = await _wanted(member, selection, state.names, state.deferred, self.held)
                if wanted is not None:
                    yield wanted
        later = {
            member
            for member, key in state.deferred.items()
            if selection.wants(key[0], state.names.get(key) or shortened_name(key[1]))
        }
        if not later:
            return
        async with contextlib.aclosing(self._open_stream()) as members:
            async for member in members:
                if member.name in later:
                    wanted = await _wanted(member, selection, state.names)
                    if wanted is not None:
                        yield wanted

    async def _restore_streaming(self, selection: Selection) -> list[CollectionOutcome]:
        started = time.monotonic()
        state = _Legacy()
        try:
            async with contextlib.aclosing(self._dumped(selection, state)) as dumped:
                async for wanted in dumped:
                    await self._stream_member(wanted, state, started)
            await self._stage_metadata_only(state, started)
        except BaseException:
            for collection in state.staged.values():
                await collection.discard()
            raise
        for name, collection in state.staged.items():
            state.outcomes.append(await self._publish_streamed(name, collection, state, started))
        return state.outcomes

    async def _publish_streamed(
        self, name: str, collection: StagedCollection, state: _Legacy, started: float
    ) -> CollectionOutcome:
        try:
            await collection.finish(
                state.layout.metadata(name, state.metadata.get(name)), Expected()
            )
            published = await collection.publish(replace=self.replace)
        except MongosnapError as exc:
            await collection.discard()
            return await self._failed(name, started, exc, self.bytes_fetched)
        except BaseException:
            await collection.discard()
            raise
        status = Status.RESTORED if published else Status.REAPPEARED
        return self._outcome(name, status, started, collection, self.bytes_fetched)

    async def _stream_member(self, wanted: _Dumped, state: _Legacy, started: float) -> None:
        member, kind, name = wanted.member, wanted.kind, wanted.name
        if kind == "metadata":
            await self._streamed_metadata(wanted, state, started)
            return
        if any(o.name == name for o in state.outcomes) or name in state.staged:
            raise CorruptArchive(f"{member.name} appears twice")
        if name in state.layout.broken:
            state.outcomes.append(await self._failed(name, started, state.layout.broken[name]))
            return
        if await self._claimed(name, state, started):
            await self._isolated(name, state, started, None, wanted)

    async def _claimed(self, name: str, state: _Legacy, started: float) -> bool:
        """Claim ``name`` and start its staging copy; False, with its outcome
        noted, when it is refused (busy, exists) or the claim fails."""
        try:
            refused = await self._claim(name)
        except MongosnapError as exc:
            state.outcomes.append(await self._failed(name, started, exc))
            return False
        if refused is not None:
            state.outcomes.append(self._outcome(name, refused, time.monotonic()))
            return False
        state.staged[name] = self._stage(name)
        return True

    async def _streamed_metadata(self, wanted: _Dumped, state: _Legacy, started: float) -> None:
        """Note a wanted metadata file; one that does not parse fails its collection only."""
        name = wanted.name
        metadata = parse_or_broken(await wanted.content(), wanted.member.name, name, state.layout)
        if metadata is None:
            collection = state.staged.pop(name, None)
            if collection is not None:
                await collection.discard()
                error = state.layout.broken[name]
                state.outcomes.append(await self._failed(name, started, error, self.bytes_fetched))
            return
        state.metadata[name] = metadata
        if name in state.staged:
            await self._isolated(name, state, started, metadata)

    async def _stage_metadata_only(self, state: _Legacy, started: float) -> None:
        """At the archive's end: a collection whose metadata came without data is
        created empty, with its options and indexes (as mongorestore does); one
        whose metadata did not parse and that had no data is reported failed."""
        done = set(state.staged) | {o.name for o in state.outcomes}
        for name, error in state.layout.broken.items():
            if name not in done:
                state.outcomes.append(await self._failed(name, started, error))
        for name, metadata in state.metadata.items():
            if name in done:
                continue
            if metadata.type == "view":
                log.warning("%s.%s is a view: not restored", self.to_database, name)
                continue
            if await self._claimed(name, state, started):
                await self._isolated(name, state, started, None, empty=True)

    async def _isolated(
        self,
        name: str,
        state: _Legacy,
        started: float,
        late: CollectionMetadata | None,
        member: _Dumped | None = None,
        *,
        empty: bool = False,
    ) -> None:
        """Stage (or apply late options to, or create ``empty``) one collection; a
        server-side failure fails that collection only. Archive faults end the
        whole pass."""
        collection = state.staged[name]
        try:
            if empty:
                self._started(name, 0, 0)
                await collection.prepare(state.metadata.get(name))
            elif member is None:
                assert late is not None
                await collection.apply_metadata(late)
            else:
                self._started(name, None, None)
                await collection.prepare(state.metadata.get(name))
                await collection.load(
                    member.chunks(), self._legacy_limit(state), self._batches(name)
                )
        except ArchiveError:
            raise
        except MongosnapError as exc:
            del state.staged[name]
            await collection.discard()
            state.outcomes.append(await self._failed(name, started, exc, self.bytes_fetched))

    def _legacy_limit(self, state: _Legacy) -> Limit:
        """Bound the documents a legacy archive can make us insert (no manifest to check)."""
        base = state.documents

        def limit(documents: int, size: int) -> None:
            state.documents = base + documents
            allowed = LEGACY_FREE_DOCUMENTS + LEGACY_DOCUMENTS_PER_BYTE * self.bytes_fetched
            if state.documents > allowed:
                raise UnsafeArchive(
                    f"{self.info.key}: {state.documents} documents from "
                    f"{self.bytes_fetched} compressed bytes: more than a dump holds "
                    f"({LEGACY_FREE_DOCUMENTS} + {LEGACY_DOCUMENTS_PER_BYTE} per byte)"
                )

        return limit

    async def _plan_streaming(self, selection: Selection) -> list[CollectionOutcome]:
        counts: dict[str, int] = {}
        state = _Legacy()
        layout = state.layout
        async with contextlib.aclosing(self._dumped(selection, state)) as dumped:
            async for wanted in dumped:
                kind, name = wanted.kind, wanted.name
                if kind == "metadata":
                    data = await wanted.content()
                    metadata = parse_or_broken(data, wanted.member.name, name, layout)
                    if metadata is not None:
                        state.metadata[name] = metadata
                elif kind == "bson":
                    counts[name] = await _count(wanted, self._legacy_limit(state))
        empty = [n for n, m in state.metadata.items() if n not in counts and m.type != "view"]
        return [
            self._planned(
                n, counts.get(n, 0), len(index_specs(layout.metadata(n, state.metadata.get(n))))
            )
            for n in [*counts, *empty]
            if n not in layout.broken
        ]

    # -- progress

    def _started(self, name: str, documents: int | None, size: int | None) -> None:
        self._totals[name] = (documents, size)
        self.progress(Progress(Stage.STARTED, self.to_database, name, 0, 0, documents, size))

    def _batches(self, name: str) -> Inserted:
        """The callback a staged load calls after each stored batch."""
        total_documents, total_bytes = self._totals[name]

        def inserted(documents: int, size: int) -> None:
            self.progress(
                Progress(
                    Stage.BATCH,
                    self.to_database,
                    name,
                    documents,
                    size,
                    total_documents,
                    total_bytes,
                )
            )

        return inserted

    def _ended(self, name: str, status: Status, staged: StagedCollection | None) -> None:
        """The last event of a collection that reported STARTED."""
        if name not in self._totals:
            return
        total_documents, total_bytes = self._totals.pop(name)
        stage = {Status.RESTORED: Stage.DONE, Status.REAPPEARED: Stage.SKIPPED}.get(
            status, Stage.FAILED
        )
        documents = staged.acknowledged if staged else 0
        size = staged.acknowledged_bytes if staged else 0
        self.progress(
            Progress(stage, self.to_database, name, documents, size, total_documents, total_bytes)
        )

    # -- shared

    def _stage(self, name: str) -> StagedCollection:
        return StagedCollection(
            self.target,
            self.to_database,
            name,
            workers=self.workers,
            ledger=self.ledger,
            slots=self._slots,
            guard=lambda: self.leases.confirm(name),
        )

    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.bytes_fetched += len(chunk)
            yield chunk

    async def target_names(self) -> set[str]:
        """The target database's collection names, listed once for the whole run.

        A listCollections reads the server's whole catalogue (16 ms for 500
        collections on FerretDB, more than a small collection's insert), so it
        is not repeated per collection. A name created after this listing is
        still never overwritten: the rename into place (without dropTarget)
        fails on it and the collection is reported ``reappeared``. A caller
        that has just listed them passes ``present`` instead (heal).
        """
        async with self._listing:
            if self._present is None:
                self._present = await self.target.collection_names(self.to_database)
        return self._present

    async def _claim(self, name: str) -> Status | None:
        """Take ``name``'s lease and drop stale staging copies of it; None when
        we may restore it, else why not: EXISTS (and we may not replace it) or
        BUSY (another run holds the lease; its staging copy is live).

        Only under the lease are copies stale: whoever made them has stopped
        and let its lease expire (lease.py).
        """
        present = await self.target_names()
        exists = not self.replace and name in present
        if not await self.leases.acquire(name):
            if exists:
                return Status.EXISTS
            log.warning(
                "%s.%s is being restored by another run: left to it", self.to_database, name
            )
            return Status.BUSY
        present.difference_update(await drop_stale(self.target, self.to_database, name, present))
        return Status.EXISTS if exists else None

    async def _failed(
        self, name: str, started: float, exc: MongosnapError, fetched: int = 0
    ) -> CollectionOutcome:
        """The outcome of a collection that failed; the run goes on unless the
        server itself is gone (then every other collection would wait it out)."""
        log.warning("%s.%s not restored from %s: %s", self.to_database, name, self.info.key, exc)
        if isinstance(exc, ServerUnreachable):
            await self.target.ping()  # raises when the server is really gone
        return self._outcome(name, Status.FAILED, started, fetched=fetched, error=str(exc))

    def _planned(self, name: str, documents: int, indexes: int) -> CollectionOutcome:
        return CollectionOutcome(
            self.to_database,
            name,
            Status.WOULD_RESTORE,
            self.info.key,
            documents,
            indexes,
            archive_size=self.info.size,
        )

    def _outcome(
        self,
        name: str,
        status: Status,
        started: float,
        staged: StagedCollection | None = None,
        fetched: int = 0,
        error: str = "",
    ) -> CollectionOutcome:
        self._ended(name, status, staged)
        return CollectionOutcome(
            database=self.to_database,
            name=name,
            status=status,
            archive=self.info.key,
            documents=staged.documents if staged else 0,
            indexes=staged.indexes if staged else 0,
            bytes_fetched=fetched,
            archive_size=self.info.size,
            duration=round(time.monotonic() - started, 3),
            error=error,
        )


def _windows(entries: list[CollectionEntry]) -> dict[str, _Window]:
    """Shared reads for runs of adjacent entries spanning at most WINDOW_BYTES.

    Only entries that follow each other in the archive with no byte between
    them share one: a window reads nothing the entries would not read alone.
    """
    runs: list[list[tuple[CollectionEntry, int, int]]] = []
    for entry in sorted(entries, key=lambda e: e.metadata.offset):
        start = entry.metadata.offset
        end = (entry.bson or entry.metadata).end
        run = runs[-1] if runs else []
        if run and run[-1][2] == start and end - run[0][1] <= WINDOW_BYTES:
            run.append((entry, start, end))
        else:
            runs.append([(entry, start, end)])
    windows: dict[str, _Window] = {}
    for run in runs:
        if len(run) > 1:
            window = _Window(run[0][1], run[-1][2], len(run))
            windows.update((entry.name, window) for entry, _, _ in run)
    return windows


async def _wanted(
    member: TarMember,
    selection: Selection,
    names: dict[tuple[str, str], str],
    deferred: dict[str, tuple[str, str]] | None = None,
    held: dict[str, set[str]] | None = None,
) -> _Dumped | None:
    """A dump member the selection wants, None for any other. Every collection
    member seen is noted in ``held`` (database -> names).

    A shortened file name (names.py) stands for the name its metadata gives:
    the metadata of a shortened name is read here, before the selection is
    asked, and the name kept in ``names``. Its data met before it goes into
    ``deferred`` (None: no later read; the data keeps shortened_name(), with
    a warning).
    """
    dump = parse_member_name(member.name)
    if dump is None or dump.stem.startswith("$"):  # $admin.system.users: not a collection
        return None
    if dump.database != selection.database:
        if held is not None:  # by its file name: only to say what the archive holds
            held.setdefault(dump.database, set()).add(collection_of(collection_name(dump.stem)))
        return None
    key, head = (dump.database, dump.stem), None
    if is_shortened(dump.stem) and dump.kind == "metadata":
        head = await read_body(member, dump.compressed, MAX_METADATA_BYTES)
        named = collection_name(dump.stem, _named(head, member.name))
        if named != collection_name(dump.stem):
            names[key] = named
    elif is_shortened(dump.stem) and key not in names:
        if deferred is not None:
            deferred[member.name] = key
            return None
        log.warning(
            "%s: a shortened file name, and no metadata before it gives the full name:"
            " restored as %r",
            member.name,
            collection_name(dump.stem),
        )
    name = names.get(key) or collection_name(dump.stem)
    if name in (LEASES, SYSTEM_INDEXES):  # another run's bookkeeping; index specs (layouts.py)
        return None
    if dump.kind == "bson":
        name = collection_of(name)  # a time-series collection's buckets
    if held is not None:
        held.setdefault(dump.database, set()).add(name)
    if not selection.wants(dump.database, name):
        return None
    return _Dumped(member, dump.kind, name, dump.compressed, head)


def _named(data: bytes, where: str) -> str:
    """The ``collectionName`` of a metadata file; "" when it has none or does
    not parse (the collection's own restore reports that)."""
    try:
        return parse_metadata(data, member=where).name
    except ArchiveError:
        return ""


async def _layout_member(member: TarMember, selection: Selection, layout: DumpLayout) -> bool:
    """Note what ``member`` tells about its database's layout (layouts.py);
    True for a member that is only that (``system.indexes.bson``)."""
    dump = parse_member_name(member.name)
    if dump is None or dump.database != selection.database:
        return False
    if dump.kind == "metadata":
        layout.metadata_files = True
        return False
    if dump.stem != SYSTEM_INDEXES:
        return False
    await layout.read_system_indexes(member, dump.compressed)
    return True


async def _metadata(member: TarMember) -> CollectionMetadata:
    return parse_metadata(await member.read(MAX_METADATA_BYTES), member=member.name)


async def _count(member: _Dumped, limit: Limit) -> int:
    """The documents of a ``.bson`` member, within the same bound as a real run."""
    splitter = BsonSplitter()
    fed = 0
    async for chunk in member.chunks():
        fed += len(chunk)
        splitter.feed(chunk)
        limit(splitter.documents, fed)
    splitter.close()
    return splitter.documents


async def _sliced(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The same bytes in slices of at most LEGACY_STEP."""
    async for chunk in chunks:
        for pos in range(0, len(chunk), LEGACY_STEP):
            yield chunk[pos : pos + LEGACY_STEP]


async def _bounded(work: list[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """Run ``work`` at most ``limit`` at a time; results in the order given.

    The first exception (or a cancellation of the caller) cancels the others,
    which clean up after themselves (see _restore_entry) before it is raised.
    """
    gate = asyncio.Semaphore(limit)

    async def one(coro: Coroutine[Any, Any, T]) -> T:
        try:
            async with gate:
                return await coro
        finally:
            coro.close()  # one cancelled before it started was never awaited

    if not work:
        return []
    tasks = [asyncio.ensure_future(one(c)) for c in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                raise failure
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the first one is being raised
        raise
    return [task.result() for task in tasks]
