"""The backup pipeline: raw batches -> tar -> compression -> storage, streaming.

Ordering (docs/format.md): the archive object is committed first, its sidecar
manifest second. Any failure or cancellation before the sidecar is stored
aborts the upload or removes the archive, so nothing that looks finished is
left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .._aio import shielded
from .._errors import DatabaseNotFound, ObjectExists, ObjectNotFound, UsageError
from .._version import __version__
from ..archive import ArchiveWriter, metadata, names
from ..archive.manifest import CollectionEntry, Manifest, SourceInfo, archive_name, manifest_key
from ..codecs import get_codec
from ..progress import Progress, ProgressCallback, Stage, ignore
from ..source import CollectionSpec, Source, count_documents, select
from ..storage import S3Config, Storage, open_storage
from .uploads import abort_stale_uploads

PREFETCH_BATCHES = 2

# Archive keys being written by this process, so concurrent backups started in
# the same second pick different names. Across processes, a writer's no-clobber
# commit is the guard: the later one fails with ObjectExists, nothing is lost.
_KEYS_IN_USE: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class CollectionResult:
    database: str
    name: str
    type: str
    documents: int
    bson_bytes: int
    sha256: str


@dataclass(frozen=True)
class BackupResult:
    """What a finished backup wrote, for callers and for ``--json``."""

    destination: str
    archive_key: str
    manifest_key: str
    codec: str
    source: str
    started: datetime
    finished: datetime
    bytes_in: int
    bytes_out: int
    collections: list[CollectionResult] = field(default_factory=list)
    stale_uploads_aborted: int = 0
    """Unfinished uploads of failed backups aborted before this one (pipelines/uploads.py)."""

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def documents(self) -> int:
        return sum(c.documents for c in self.collections)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["started"] = self.started.isoformat()
        out["finished"] = self.finished.isoformat()
        out["duration"] = round(self.duration, 3)
        out["documents"] = self.documents
        return out


async def backup(
    source: Any,
    destination: str | Storage,
    *,
    database: str | Sequence[str] | None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    codec: str = "gzip",
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
    batch_size: int = 1000,
    progress: ProgressCallback = ignore,
) -> BackupResult:
    """Back up one, several (a list) or all (None) databases into one archive.

    ``source`` is a MongoDB URI, a ``host[:port]`` string, an AsyncMongoClient
    or a Motor client; ``destination`` is ``s3://bucket[/prefix]``, a directory
    (path or ``file://``) or a Storage. Returns what was written.
    """
    chosen_codec = get_codec(codec)
    storage = open_storage(destination, s3=s3)
    try:
        await storage.check()
        aborted = await abort_stale_uploads(storage)
        async with await Source.connect(source, connect_timeout=connect_timeout) as src:
            specs = await _plan(src, database, include, exclude)
            job = _Job(src, storage, chosen_codec, batch_size, progress)
            return replace(await job.run(specs), stale_uploads_aborted=aborted)
    finally:
        if not isinstance(destination, Storage):
            await storage.aclose()


async def _plan(
    src: Source,
    database: str | Sequence[str] | None,
    include: Sequence[str],
    exclude: Sequence[str],
) -> list[CollectionSpec]:
    """Every collection to dump, databases in order, or DatabaseNotFound."""
    if database is None:
        databases = await src.database_names()
    elif isinstance(database, str):
        databases = [database]
    else:
        databases = list(dict.fromkeys(database))
    if not databases:
        raise DatabaseNotFound(f"no database to back up on {src.hosts}")
    specs: list[CollectionSpec] = []
    for name in databases:
        if not name or any(c in name for c in '/\\. "$\0'):
            raise UsageError(f"not a valid database name: {name!r}")
        found = await src.collections(name, include, exclude)
        if not found and not select(await src.collection_names(name), include, exclude):
            raise DatabaseNotFound(
                f"database {name!r} does not exist or holds no collection on {src.hosts}"
                + (" matching the include/exclude patterns" if include or exclude else "")
            )
        specs.extend(found)
    return specs


class _Job:
    """One backup run: owns the archive writer and the collection results."""

    def __init__(
        self,
        src: Source,
        storage: Storage,
        codec: Any,
        batch_size: int,
        progress: ProgressCallback,
    ) -> None:
        self.src = src
        self.storage = storage
        self.codec = codec
        self.batch_size = batch_size
        self.progress = progress
        self.entries: list[CollectionEntry] = []

    async def run(self, specs: list[CollectionSpec]) -> BackupResult:
        started = datetime.now(UTC)
        clock = time.monotonic()
        key = await self._free_key(started)
        try:
            return await self._write(key, specs, started, clock)
        finally:
            _KEYS_IN_USE.discard((self.storage.url, key))

    async def _write(
        self, key: str, specs: list[CollectionSpec], started: datetime, clock: float
    ) -> BackupResult:
        sink = self.storage.open_writer(key)
        try:
            async with ArchiveWriter(sink, self.codec) as writer:
                for spec in specs:
                    self.entries.append(await self._dump(writer, spec))
                finished = started + timedelta(seconds=time.monotonic() - clock)
                manifest = await self._manifest(key, started, finished)
                _, document = manifest.sealed(writer.plan_finish)
                await writer.finish(document)
            info = await sink.commit()
        except BaseException:
            await shielded(sink.abort())
            raise
        side_key = manifest_key(key)
        try:
            await self.storage.put(side_key, document)
        except BaseException:
            await shielded(self.storage.delete(key))
            raise
        return self._result(key, side_key, started, finished, info.size)

    async def _free_key(self, when: datetime) -> str:
        """The archive name for this second, or the next free second."""
        for _ in range(3600):
            key = archive_name(when, self.codec)
            claim = (self.storage.url, key)
            if claim not in _KEYS_IN_USE:
                _KEYS_IN_USE.add(claim)  # before awaiting, so no other task takes it
                try:
                    await self.storage.stat(key)
                except ObjectNotFound:
                    return key
                except BaseException:
                    _KEYS_IN_USE.discard(claim)
                    raise
                _KEYS_IN_USE.discard(claim)
            when += timedelta(seconds=1)
        raise ObjectExists(f"{self.storage.url}: every archive name of the next hour is taken")

    async def _dump(self, writer: ArchiveWriter, spec: CollectionSpec) -> CollectionEntry:
        indexes = await self.src.indexes(spec.database, spec.name) if spec.has_documents else []
        meta = await writer.add_file(
            names.member_name(spec.database, spec.name, "metadata"),
            metadata.build_metadata(spec, indexes),
        )
        self.progress(Progress(Stage.STARTED, spec.database, spec.name))
        digest = hashlib.sha256()
        documents = size = 0
        bson_range = None
        if spec.has_documents:
            bson_name = names.member_name(
                spec.database, spec.name, "bson", collection_type=spec.type
            )
            await writer.begin(bson_name)
            batches = self.src.raw_batches(spec.database, spec.name, batch_size=self.batch_size)
            async with contextlib.aclosing(_prefetched(batches, PREFETCH_BATCHES)) as stream:
                async for batch in stream:
                    digest.update(batch)
                    documents += count_documents(batch)
                    size += len(batch)
                    await writer.write(batch)
                    self.progress(Progress(Stage.BATCH, spec.database, spec.name, documents, size))
            bson_range = await writer.end()
        self.progress(Progress(Stage.DONE, spec.database, spec.name, documents, size))
        return CollectionEntry(
            database=spec.database,
            name=spec.name,
            type=spec.type,
            documents=documents,
            bson_bytes=size,
            sha256=digest.hexdigest(),
            metadata=meta,
            bson=bson_range,
        )

    async def _manifest(self, key: str, started: datetime, finished: datetime) -> Manifest:
        return Manifest(
            archive=key.rsplit("/", 1)[-1],
            codec=self.codec.name,
            tool_version=__version__,
            created=started,
            started=started,
            finished=finished,
            source=SourceInfo(self.src.hosts.split(","), await self.src.server_version()),
            databases=list(dict.fromkeys(e.database for e in self.entries)),
            collections=self.entries,
        )

    def _result(
        self, key: str, side_key: str, started: datetime, finished: datetime, size: int
    ) -> BackupResult:
        return BackupResult(
            destination=self.storage.url,
            archive_key=key,
            manifest_key=side_key,
            codec=self.codec.name,
            source=self.src.hosts,
            started=started,
            finished=finished,
            bytes_in=sum(e.bson_bytes for e in self.entries),
            bytes_out=size,
            collections=[
                CollectionResult(e.database, e.name, e.type, e.documents, e.bson_bytes, e.sha256)
                for e in self.entries
            ],
        )


@dataclass(frozen=True)
class _Failed:
    error: Exception


async def _prefetched(
    batches: AsyncGenerator[bytes, None], depth: int
) -> AsyncGenerator[bytes, None]:
    """Fetch up to ``depth`` batches ahead so the server works while we compress."""
    queue: asyncio.Queue[bytes | _Failed | None] = asyncio.Queue(depth)

    async def pump() -> None:
        try:
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    await queue.put(batch)
        except Exception as exc:
            await queue.put(_Failed(exc))
        else:
            await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["BackupResult", "CollectionResult", "backup"]
