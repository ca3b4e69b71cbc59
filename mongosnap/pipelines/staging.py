"""Build a collection under a temporary name, check it, then rename it into place.

A restored collection must appear complete or not at all: documents go into
``mongosnap_tmp_<token>_<name>``, indexes are built there, counts and checksums
are compared with what the archive promised, and only then does one
renameCollection (without dropTarget, unless the caller asked to replace)
make it visible. If the name was taken meanwhile, the staged copy is dropped
and the existing collection is left alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterable, Coroutine
from dataclasses import dataclass
from typing import Any

from .._aio import shielded
from .._errors import CorruptArchive
from ..archive.bsonstream import BsonSplitter
from ..archive.metadata import CollectionMetadata
from ..source import Source

TEMP_PREFIX = "mongosnap_tmp_"
BATCH_BYTES = 8 << 20
BATCH_DOCUMENTS = 1000


def temp_name(name: str) -> str:
    return f"{TEMP_PREFIX}{secrets.token_hex(4)}_{name}"


def is_temp_of(candidate: str, name: str) -> bool:
    """Whether ``candidate`` is a staged copy of ``name`` (from any run)."""
    head = len(TEMP_PREFIX) + 9
    return candidate.startswith(TEMP_PREFIX) and candidate[head:] == name


async def drop_stale(target: Source, database: str, name: str) -> list[str]:
    """Drop staged copies of ``name`` left by a run that was killed."""
    stale = [c for c in await target.collection_names(database) if is_temp_of(c, name)]
    for candidate in stale:
        await target.drop(database, candidate)
    return stale


@dataclass(frozen=True)
class Expected:
    """What the archive promises about a collection; None where it says nothing."""

    documents: int | None = None
    bson_bytes: int | None = None
    sha256: str | None = None


class _Pool:
    """At most ``limit`` inserts in flight; the first failure is raised."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: set[asyncio.Task[None]] = set()

    async def submit(self, work: Coroutine[Any, Any, None]) -> None:
        while len(self.pending) >= self.limit:
            await self._reap(asyncio.FIRST_COMPLETED)
        self.pending.add(asyncio.ensure_future(work))

    async def drain(self) -> None:
        while self.pending:
            await self._reap(asyncio.FIRST_EXCEPTION)

    async def _reap(self, when: str) -> None:
        done, self.pending = await asyncio.wait(self.pending, return_when=when)
        for task in done:
            task.result()

    async def cancel(self) -> None:
        for task in self.pending:
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        self.pending.clear()


class StagedCollection:
    """One collection being restored; invisible under its real name until publish()."""

    def __init__(self, target: Source, database: str, name: str, *, workers: int = 4) -> None:
        self.target = target
        self.database = database
        self.name = name
        self.temp = temp_name(name)
        self.workers = workers
        self.options: dict[str, Any] | None = None
        self.documents = 0
        self.bytes = 0
        self.indexes = 0
        self.acknowledged = 0
        self._digest = hashlib.sha256()
        self._created = False

    async def prepare(self, metadata: CollectionMetadata | None) -> None:
        """Create the staging collection, with the archive's options if known yet."""
        self.options = dict(metadata.options) if metadata else None
        await self.target.create_collection(self.database, self.temp, self.options or {})
        self._created = True

    async def load(self, chunks: AsyncIterable[bytes]) -> None:
        """Insert the documents of one ``.bson`` stream, as raw bytes, in batches."""
        capped = bool((self.options or {}).get("capped"))
        pool = _Pool(1 if capped else self.workers)  # a capped collection keeps its order
        splitter = BsonSplitter()
        batch: list[bytes] = []
        size = 0
        try:
            async for chunk in chunks:
                self._digest.update(chunk)
                for document in splitter.feed(chunk):
                    batch.append(document)
                    size += len(document)
                    if size >= BATCH_BYTES or len(batch) >= BATCH_DOCUMENTS:
                        await pool.submit(self._insert(batch))
                        batch, size = [], 0
            splitter.close()
            if batch:
                await pool.submit(self._insert(batch))
            await pool.drain()
        except BaseException:
            await pool.cancel()
            raise
        self.documents, self.bytes = splitter.documents, splitter.bytes

    async def _insert(self, documents: list[bytes]) -> None:
        stored = await self.target.insert_raw(self.database, self.temp, documents)
        self.acknowledged += stored  # after the await: concurrent batches add up safely

    async def apply_metadata(self, metadata: CollectionMetadata) -> None:
        """Options that arrive after the documents (a legacy archive's member order)."""
        options = dict(metadata.options)
        if self.options is None and options:
            await self._recreate_with(options)
        self.options = options

    async def _recreate_with(self, options: dict[str, Any]) -> None:
        """Options can only be set at creation: copy into a new staging collection."""
        fresh = temp_name(self.name)
        await self.target.create_collection(self.database, fresh, options)
        try:
            async for batch in self.target.raw_batches(self.database, self.temp):
                await self.target.insert_raw(self.database, fresh, BsonSplitter().feed(batch))
        except BaseException:
            await shielded(self.target.drop(self.database, fresh))
            raise
        await self.target.drop(self.database, self.temp)
        self.temp = fresh

    async def finish(self, metadata: CollectionMetadata | None, expected: Expected) -> None:
        """Build indexes and check the staged copy against the archive's promises."""
        self._check(expected)
        # The server's acknowledgements, not a count query: counting scans the
        # whole collection on some servers (FerretDB), which doubled heal times.
        if self.acknowledged != self.documents:
            raise CorruptArchive(
                f"{self.database}.{self.name}: {self.acknowledged} documents stored, "
                f"{self.documents} read"
            )
        specs = [i for i in (metadata.indexes if metadata else []) if i.get("name") != "_id_"]
        await self.target.create_indexes(self.database, self.temp, specs)
        self.indexes = len(specs)

    def _check(self, expected: Expected) -> None:
        where = f"{self.database}.{self.name}"
        if expected.documents is not None and expected.documents != self.documents:
            raise CorruptArchive(
                f"{where}: {self.documents} documents, the manifest says {expected.documents}"
            )
        if expected.bson_bytes is not None and expected.bson_bytes != self.bytes:
            raise CorruptArchive(
                f"{where}: {self.bytes} bytes, the manifest says {expected.bson_bytes}"
            )
        if expected.sha256 is not None and expected.sha256 != self._digest.hexdigest():
            raise CorruptArchive(f"{where}: checksum differs from the manifest")

    async def publish(self, *, replace: bool = False) -> bool:
        """Rename into place; False (and nothing changed) if the name is taken."""
        if await self.target.rename(self.database, self.temp, self.name, replace=replace):
            self._created = False
            return True
        await self.discard()
        return False

    async def discard(self) -> None:
        """Drop the staging collection, even while being cancelled."""
        if self._created:
            self._created = False
            await shielded(self.target.drop(self.database, self.temp))
