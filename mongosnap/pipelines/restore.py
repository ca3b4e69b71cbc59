"""Restore collections from one archive into a MongoDB database.

Two ways to read an archive:

- with a manifest (docs/format.md), each wanted collection is fetched alone:
  one ranged read of its two members, never the whole archive, checked
  against the manifest's count, size and SHA-256 before it becomes visible;
- without one (a legacy ``tar -czf dump`` archive), the archive is streamed
  once; wanted collections are staged as their members pass by and become
  visible only after the archive has been read to its end-of-archive.

Either way a collection is built under a temporary name and renamed into
place (staging.py), so readers see it complete or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .._errors import CollectionExists, CorruptArchive
from ..archive.manifest import COMPLETE, CollectionEntry, MemberRange
from ..archive.metadata import MAX_METADATA_BYTES, CollectionMetadata, parse_metadata
from ..archive.names import parse_member_name, unescape_collection_name
from ..archive.reader import TarMember, read_archive
from ..archive.tar import member_length
from ..catalog import ArchiveInfo, resolve
from ..codecs import get_codec
from ..source import Source, select
from ..storage import S3Config, Storage, open_storage
from .staging import Expected, StagedCollection, drop_stale

log = logging.getLogger("mongosnap.restore")

Wanted = Callable[[str, str], bool]
"""Whether (database, collection) in the archive is to be restored."""


@dataclass(frozen=True)
class CollectionOutcome:
    """What happened to one collection; ``status`` is restored, exists or reappeared.

    ``bytes_fetched`` is what was read for this collection: its own range in an
    archive with a manifest, the whole archive (shared with the collections
    restored alongside) for a legacy one.
    """

    database: str
    name: str
    status: str
    archive: str
    documents: int = 0
    indexes: int = 0
    bytes_fetched: int = 0
    archive_size: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class RestoreResult:
    archive_key: str
    archive_size: int
    bytes_fetched: int
    collections: list[CollectionOutcome] = field(default_factory=list)
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ArchiveSession:
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
    ) -> None:
        self.storage = storage
        self.info = info
        self.target = target
        self.to_database = to_database
        self.workers = workers
        self.replace = replace
        self.bytes_fetched = 0
        """Bytes read from storage by this session, all reads together."""

    def entries(self, wanted: Wanted) -> list[CollectionEntry] | None:
        """The manifest's wanted entries; None when the archive has no manifest.

        Views and time-series collections are left out (docs/heal.md, limits).
        """
        if self.info.manifest is None:
            return None
        found = []
        for entry in self.info.manifest.collections:
            if not wanted(entry.database, entry.name):
                continue
            if entry.status != COMPLETE:  # vanished during the backup: not a snapshot
                log.info(
                    "%s.%s is %s in %s", entry.database, entry.name, entry.status, self.info.key
                )
                continue
            if entry.type != "collection":
                log.warning("%s.%s is a %s: not restored", entry.database, entry.name, entry.type)
                continue
            found.append(entry)
        return found

    async def holdings(self, wanted: Wanted) -> list[str]:
        """Names of wanted collections with documents in the archive, touching no database.

        Without a manifest this reads the whole archive.
        """
        entries = self.entries(wanted)
        if entries is not None:
            return [e.name for e in entries]
        found = []
        members = read_archive(self._counted(self.storage.read(self.info.key)))
        async with contextlib.aclosing(members):
            async for member in members:
                dump = parse_member_name(member.name)
                if dump and dump.kind == "bson":
                    name = unescape_collection_name(dump.stem)
                    if wanted(dump.database, name):
                        found.append(name)
                async for _ in member.chunks():
                    pass
        return found

    async def restore(self, wanted: Wanted) -> list[CollectionOutcome]:
        entries = self.entries(wanted)
        if entries is None:
            return await self._restore_streaming(wanted)
        if entries:
            await self.check_embedded_manifest()
        return [await self._restore_range(entry) for entry in entries]

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

    def _read_ranges(self, *ranges: MemberRange) -> AsyncGenerator[TarMember, None]:
        """The members of consecutive ranges, from one ranged read, bounded to their size."""
        return read_archive(
            self._counted(self.storage.read(self.info.key, ranges[0].offset, ranges[-1].end)),
            codec=get_codec(self.info.codec),
            require_end=False,
            max_total_size=sum(member_length(r.name, r.size) for r in ranges),
        )

    # -- with a manifest: one ranged read per collection

    async def _restore_range(self, entry: CollectionEntry) -> CollectionOutcome:
        started = time.monotonic()
        ranges = [entry.metadata] if entry.bson is None else [entry.metadata, entry.bson]
        fetched = ranges[-1].end - ranges[0].offset
        if await self._taken(entry.name):
            return self._outcome(entry.name, "exists", started)
        staged = StagedCollection(self.target, self.to_database, entry.name, workers=self.workers)
        try:
            metadata = None
            async with contextlib.aclosing(self._read_ranges(*ranges)) as members:
                async for member in members:
                    if member.name == entry.metadata.name:
                        metadata = await _metadata(member)
                        await staged.prepare(metadata)
                    elif entry.bson is not None and member.name == entry.bson.name:
                        if metadata is None:
                            raise CorruptArchive(f"{member.name} comes before its metadata")
                        await staged.load(member.chunks())
                    else:
                        raise CorruptArchive(f"unexpected member {member.name!r} in the range")
            if metadata is None:
                raise CorruptArchive(f"{entry.metadata.name} missing from its range")
            expected = Expected(entry.documents, entry.bson_bytes, entry.sha256)
            await staged.finish(metadata, expected)
            published = await staged.publish(replace=self.replace)
        except BaseException:
            await staged.discard()
            raise
        status = "restored" if published else "reappeared"
        return self._outcome(entry.name, status, started, staged, fetched)

    # -- without a manifest: stream the archive once

    async def _restore_streaming(self, wanted: Wanted) -> list[CollectionOutcome]:
        started = time.monotonic()
        staged: dict[str, StagedCollection] = {}
        metadata: dict[str, CollectionMetadata] = {}
        outcomes: list[CollectionOutcome] = []
        try:
            members = read_archive(self._counted(self.storage.read(self.info.key)))
            async with contextlib.aclosing(members):
                async for member in members:
                    await self._stream_member(member, wanted, staged, metadata, outcomes)
            for name, collection in staged.items():
                await collection.finish(metadata.get(name), Expected())
            for name, collection in staged.items():
                published = await collection.publish(replace=self.replace)
                status = "restored" if published else "reappeared"
                outcome = self._outcome(name, status, started, collection, self.bytes_fetched)
                outcomes.append(outcome)
        except BaseException:
            for collection in staged.values():
                await collection.discard()
            raise
        return outcomes

    async def _stream_member(
        self,
        member: TarMember,
        wanted: Wanted,
        staged: dict[str, StagedCollection],
        metadata: dict[str, CollectionMetadata],
        outcomes: list[CollectionOutcome],
    ) -> None:
        dump = parse_member_name(member.name)
        if dump is None:
            return
        name = unescape_collection_name(dump.stem)
        if not wanted(dump.database, name):
            return
        if dump.kind == "metadata":
            metadata[name] = await _metadata(member)
            if name in staged:
                await staged[name].apply_metadata(metadata[name])
            return
        if any(o.name == name for o in outcomes) or name in staged:
            raise CorruptArchive(f"{member.name} appears twice")
        if await self._taken(name):
            outcomes.append(self._outcome(name, "exists", time.monotonic()))
            return
        collection = StagedCollection(self.target, self.to_database, name, workers=self.workers)
        staged[name] = collection
        await collection.prepare(metadata.get(name))
        await collection.load(member.chunks())

    # -- shared

    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.bytes_fetched += len(chunk)
            yield chunk

    async def _taken(self, name: str) -> bool:
        """Whether ``name`` exists in the target (and we may not replace it).

        Staged copies a killed run left for this name are dropped first.
        """
        await drop_stale(self.target, self.to_database, name)
        if self.replace:
            return False
        return name in await self.target.collection_names(self.to_database)

    def _outcome(
        self,
        name: str,
        status: str,
        started: float,
        staged: StagedCollection | None = None,
        fetched: int = 0,
    ) -> CollectionOutcome:
        return CollectionOutcome(
            database=self.to_database,
            name=name,
            status=status,
            archive=self.info.key,
            documents=staged.documents if staged else 0,
            indexes=staged.indexes if staged else 0,
            bytes_fetched=fetched,
            archive_size=self.info.size,
            seconds=round(time.monotonic() - started, 3),
        )


async def _metadata(member: TarMember) -> CollectionMetadata:
    return parse_metadata(await member.read(MAX_METADATA_BYTES))


def selector(
    database: str,
    collections: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Wanted:
    """A Wanted for one database of the archive, by names and/or patterns."""
    names = set(collections)

    def wanted(db: str, name: str) -> bool:
        if db != database or (names and name not in names):
            return False
        return bool(select([name], include, exclude))

    return wanted


async def restore(
    target: Any,
    destination: str | Storage,
    archive: str = "latest",
    *,
    database: str,
    collections: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    to_database: str | None = None,
    drop: bool = False,
    workers: int = 4,
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
) -> RestoreResult:
    """Restore ``database`` (all or some collections) from an archive.

    Existing collections are never overwritten unless ``drop``: with a
    manifest the restore refuses up front (CollectionExists names them);
    a legacy archive reports them as ``exists`` and restores the others.
    """
    started = time.monotonic()
    storage = open_storage(destination, s3=s3)
    try:
        info = await resolve(storage, archive)
        async with await Source.connect(target, connect_timeout=connect_timeout) as src:
            session = ArchiveSession(
                storage, info, src, to_database or database, workers=workers, replace=drop
            )
            wanted = selector(database, collections, include, exclude)
            await _refuse_overwrite(session, wanted)
            outcomes = await session.restore(wanted)
    finally:
        if not isinstance(destination, Storage):
            await storage.aclose()
    duration = round(time.monotonic() - started, 3)
    return RestoreResult(info.key, info.size, session.bytes_fetched, outcomes, duration)


async def _refuse_overwrite(session: ArchiveSession, wanted: Wanted) -> None:
    entries = session.entries(wanted)
    if session.replace or entries is None:
        return
    existing = await session.target.collection_names(session.to_database)
    taken = sorted(e.name for e in entries if e.name in existing)
    if taken:
        raise CollectionExists(
            f"{session.to_database} already has {', '.join(taken)}; "
            "restore into another database (--to-database) or replace them (--drop)"
        )
