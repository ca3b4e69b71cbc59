"""Continuous oplog archiving: tail the oplog, write chunks, until cancelled.

Joins the oplog reader (tail.py) and the chunk objects (chunks.py). Ordering:
chunk object first, sidecar second; a gap object is written before the first
chunk after the gap. On cancellation (Ctrl-C, SIGTERM) the entries buffered so
far are flushed as a last chunk, shielded from the cancellation, then the
cancellation goes on; if that flush fails, the object it left without a
sidecar is removed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .._aio import shielded
from .._errors import CorruptArchive, UsageError
from ..clients import MongoSource
from ..codecs import get_codec
from ..source import Source
from ..storage import S3Config, Storage, opened
from . import chunks
from .chunks import ChunkInfo, Coverage, GapInfo
from .position import Ts
from .tail import Batch, Gap, OplogTail, Resume, entry_ts

DEFAULT_INTERVAL = 60.0
DEFAULT_MAX_BYTES = 16 << 20

log = logging.getLogger("mongosnap.oplog")


@dataclass
class ArchiverStats:
    """Running totals, for callers and the benchmark."""

    chunks: int = 0
    entries: int = 0
    bytes: int = 0
    gaps: int = 0
    last: ChunkInfo | None = None


ChunkCallback = Callable[[ChunkInfo], None]


async def archive_oplog(
    source: MongoSource,
    destination: str | Storage,
    *,
    interval: float = DEFAULT_INTERVAL,
    max_bytes: int = DEFAULT_MAX_BYTES,
    codec: str = "gzip",
    start: str = "oldest",
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
    await_ms: int = 1000,
    on_chunk: ChunkCallback | None = None,
    stats: ArchiverStats | None = None,
) -> None:
    """Archive the oplog of ``source`` into ``destination``/oplog/ until cancelled.

    A chunk is written every ``interval`` seconds or ``max_bytes`` of entries,
    whichever comes first. With chunks already at the destination it resumes
    after the last complete one; otherwise it starts at the ``oldest`` entry of
    the oplog, or after the newest (``start="now"``). Never returns normally.
    """
    if interval <= 0 or max_bytes <= 0:
        raise UsageError("the chunk interval and size must be positive")
    if start not in ("oldest", "now"):
        raise UsageError(f"start is 'oldest' or 'now', not {start!r}")
    if codec not in ("gzip", "zstd"):
        raise UsageError(f"oplog chunks are compressed with gzip or zstd, not {codec!r}")
    async with opened(destination, s3) as storage:
        await storage.check()
        async with await Source.connect(source, connect_timeout=connect_timeout) as src:
            job = _Archiver(src, storage, get_codec(codec), interval, max_bytes, on_chunk)
            job.stats = stats or ArchiverStats()
            resume = await job.resume_point()
            tail = OplogTail(src, resume, from_newest=start == "now", await_ms=await_ms)
            await job.run(tail)


class _Archiver:
    def __init__(
        self,
        src: Source,
        storage: Storage,
        codec: Any,
        interval: float,
        max_bytes: int,
        on_chunk: ChunkCallback | None,
    ) -> None:
        self.src = src
        self.storage = storage
        self.codec = codec
        self.interval = interval
        self.max_bytes = max_bytes
        self.on_chunk = on_chunk
        self.stats = ArchiverStats()
        self.prev: Ts | None = None  # last ts of the previous chunk of this span
        self.entries: list[bytes] = []
        self.stamps: list[Ts] = []
        self.size = 0
        self.opened = 0.0  # monotonic time of the first buffered entry

    async def resume_point(self) -> Resume | None:
        """After the last complete chunk; orphaned chunk objects are removed.

        A chunk whose sidecar is unusable does not count: the entries after the
        last usable one are archived again while the oplog still holds them."""
        coverage = await chunks.read_coverage(self.storage)
        for key in coverage.incomplete:
            log.info("removing incomplete oplog chunk %s", key)
            await self.storage.delete(key)
        if not coverage.chunks:
            return None
        last = max(coverage.chunks, key=lambda c: c.last_ts)
        self.prev = last.last_ts
        return Resume(last.last_ts, await self._stamps(last))

    async def _stamps(self, last: ChunkInfo) -> list[Ts]:
        """The chunk's timestamps, to drop entries seen again; none if it is corrupt
        (then only entries after its ``last_ts`` are taken)."""
        data = await self.storage.read_bytes(last.object_key, limit=chunks.MAX_CHUNK_BYTES)
        try:
            return [entry_ts(e) for e in chunks.split_entries(chunks.decode_chunk(data, last))]
        except CorruptArchive as exc:
            log.warning("%s; resuming after its last entry %s", exc, last.last_ts)
            return []

    async def run(self, tail: OplogTail) -> None:
        try:
            async with contextlib.aclosing(tail.stream()) as stream:
                async for event in stream:
                    if isinstance(event, Gap):
                        await self.flush()
                        await self.record_gap(event)
                        continue
                    self.add(event)
                    if self.due():
                        await self.flush()
        finally:
            await shielded(self.flush())

    def add(self, batch: Batch) -> None:
        if batch.entries and not self.entries:
            self.opened = time.monotonic()
        if batch.entries:
            log.debug("read %d entries up to %s", len(batch.entries), batch.stamps[-1])
        self.entries += batch.entries
        self.stamps += batch.stamps
        self.size += sum(len(e) for e in batch.entries)

    def due(self) -> bool:
        if not self.entries:
            return False
        return self.size >= self.max_bytes or time.monotonic() - self.opened >= self.interval

    async def flush(self) -> None:
        """Write the buffered entries as one chunk: object, then sidecar."""
        if not self.entries:
            return
        entries, stamps = self.entries, self.stamps
        raw, packed, digest = await asyncio.to_thread(chunks.encode_chunk, entries, self.codec)
        first, last = min(stamps), max(stamps)
        key = chunks.chunk_key(first, last, self.codec)
        info = ChunkInfo(
            object=key.removeprefix(chunks.PREFIX),
            codec=self.codec.name,
            first_ts=first,
            last_ts=last,
            prev_ts=self.prev,
            count=len(entries),
            bson_bytes=len(raw),
            sha256=digest,
            object_bytes=len(packed),
            source=self.src.hosts,
            created=datetime.now(UTC),
            key=chunks.sidecar_key(key),
        )
        await self.storage.put(key, packed)
        try:
            await self.storage.put(info.key, info.to_json())
        except BaseException:
            await shielded(self.storage.delete(key))
            raise
        self.entries, self.stamps, self.size = [], [], 0
        self.prev = last
        self._count(info)

    def _count(self, info: ChunkInfo) -> None:
        stats = self.stats
        stats.chunks += 1
        stats.entries += info.count
        stats.bytes += info.bson_bytes
        stats.last = info
        log.info("oplog chunk %s: %d entries", info.object, info.count)
        if self.on_chunk is not None:
            self.on_chunk(info)

    async def record_gap(self, gap: Gap) -> None:
        reason = (
            f"entry {gap.after} is no longer in the oplog of {self.src.hosts} "
            "(it rolled over, or archiving stopped for too long)"
        )
        info = GapInfo(gap.after, gap.before, datetime.now(UTC), reason)
        log.warning("oplog gap after %s, before %s: %s", gap.after, gap.before, reason)
        await self.storage.put(chunks.gap_key(gap.after, gap.before), info.to_json())
        self.prev = None
        self.stats.gaps += 1


async def list_oplog(destination: str | Storage, *, s3: S3Config | None = None) -> Coverage:
    """What the oplog chunks at ``destination`` cover: spans, gaps, incomplete chunks."""
    async with opened(destination, s3) as storage:
        return await chunks.read_coverage(storage)
