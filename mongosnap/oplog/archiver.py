"""Continuous oplog archiving: tail the oplog, write chunks, until cancelled.

Joins the oplog reader (tail.py) and the chunk objects (chunks.py). Ordering:
chunk object first, sidecar second; a gap object is written before the first
chunk after the gap. On cancellation (Ctrl-C, SIGTERM) the entries buffered so
far are flushed as a last chunk, shielded from the cancellation, then the
cancellation goes on; if that flush fails, the object it left without a
sidecar is removed at the next start.

A chunk holds only entries the tail says are settled (``OplogTail.settled``:
on FerretDB an entry can become visible after later ones), in ts order, so
an entry that commits late still lands in order, and the chunks of a span
hold the oplog in ts order from one to the next. One that comes later
still, at or before the last ts already written, cannot be put in order: it
is not archived, and a gap object from just before it to the next chunk
records that entries may be missing there.

A write that fails because the destination is unreachable (a plain
StorageError, exit 20; not a denial or a missing bucket) is retried with a
delay that doubles from ``retry_delay`` to ``retry_max_delay``, while the
tail goes on reading into the buffer. Once the buffer holds ``max_buffer``
bytes the archiver stops reading and only retries; the oplog keeps the
entries meanwhile, so nothing is lost until the oplog rolls past the last
entry read. Then the archiver exits (StorageError, exit 20) saying so: the
loss can only be recorded as a gap once the destination is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from .._aio import shielded
from .._errors import CorruptArchive, SourceError, StorageError, UsageError
from ..clients import MongoSource
from ..codecs import get_codec
from ..encryption import Encryption, check_recipients
from ..pipelines.locking import LockPolicy, lock_policy, locked
from ..source import Source
from ..storage import S3Config, Storage, opened
from . import chunks
from .chunks import ChunkInfo, Coverage, GapInfo
from .position import Ts
from .tail import Batch, Gap, OplogTail, Resume, bound, entry_ts
from .tripwire import BASELINE_REFRESH, Tripwires, keep_baseline, read_baseline

if TYPE_CHECKING:
    from ..crypto.keys import Recipient

DEFAULT_INTERVAL = 60.0
DEFAULT_MAX_BYTES = 16 << 20
DEFAULT_MAX_BUFFER = 256 << 20
"""Bytes of entries held while the destination cannot be written to."""
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_RETRY_MAX_DELAY = 60.0

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


class Stager(Protocol):
    """What the archiver offers ``--stage`` (pipelines/trip_stage.py)."""

    def attach(
        self,
        source: MongoSource,
        storage: Storage,
        want: Callable[[Ts], None],
        connect_timeout: float = 10.0,
    ) -> None: ...

    def stored(self, last: Ts) -> None: ...

    async def close(self) -> None: ...


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
    settle: float | None = None,
    max_buffer: int = DEFAULT_MAX_BUFFER,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY,
    tripwires: Tripwires | None = None,
    lock_for: timedelta | None = None,
    lock_mode: str = "governance",
    encryption: Encryption | None = None,
    read_preference: str | None = None,
    baseline_refresh: float = BASELINE_REFRESH,
    stager: Stager | None = None,
) -> None:
    """Archive the oplog of ``source`` into ``destination``/oplog/ until cancelled.

    A chunk is written every ``interval`` seconds or ``max_bytes`` of entries,
    whichever comes first. With chunks already at the destination it resumes
    after the last complete one; otherwise it starts at the ``oldest`` entry of
    the oplog, or after the newest (``start="now"``). ``settle``: seconds an
    entry may become visible after later ones (None: ``FERRETDB_SETTLE`` on
    FerretDB, 0 on MongoDB; tail.py). While the destination cannot be
    written to, up to ``max_buffer`` bytes of entries are held and the write
    is retried every ``retry_delay`` seconds, doubling up to
    ``retry_max_delay`` (module doc). ``tripwires`` count every entry read
    (tripwire.py); their ``shrink`` rules get the counts of the newest archives
    at ``destination``, read again every ``baseline_refresh`` seconds.
    ``lock_for``: each chunk, its sidecar and each gap record are locked with
    S3 Object Lock for that long from their writing (``lock_mode`` as for
    backup). ``read_preference``: the member the oplog is read from, chosen
    once per connection and read through a direct connection
    (Source.connect_pinned). ``encryption``: each chunk is an age file
    ``….bson.gz.age`` with a clear sidecar (docs/encryption.md). ``stager``
    (``--stage``, pipelines/trip_stage.py) gets ``source``, the destination and
    the stored chunks' ends, and may ask for a chunk early; it cannot go with
    ``encryption`` (undo reads no encrypted chunk). Never
    returns normally.
    """
    if interval <= 0 or max_bytes <= 0:
        raise UsageError("the chunk interval and size must be positive")
    if settle is not None and not 0 <= settle <= 3600:
        raise UsageError("the settle time is from 0 to 3600 seconds")
    if max_buffer < max_bytes:
        raise UsageError("the buffer must hold at least one chunk (max_buffer >= max_bytes)")
    if not 0 < retry_delay <= retry_max_delay:
        raise UsageError("the retry delays must be positive, the first at most the longest")
    if start not in ("oldest", "now"):
        raise UsageError(f"start is 'oldest' or 'now', not {start!r}")
    if codec not in ("gzip", "zstd"):
        raise UsageError(f"oplog chunks are compressed with gzip or zstd, not {codec!r}")
    if stager is not None and encryption is not None:
        raise UsageError(
            "staging undo collections at a trip (--stage) reads the archived oplog, which "
            "undo cannot read when encrypted: drop --stage or the encryption"
        )
    recipients = encryption.resolved() if encryption is not None else None
    if recipients:
        await check_recipients(recipients)
    async with opened(destination, s3) as storage:
        await storage.check()
        policy = await lock_policy(storage, lock_for, lock_mode)
        connecting = (
            Source.connect(source, connect_timeout=connect_timeout)
            if read_preference is None
            else Source.connect_pinned(source, read_preference, connect_timeout=connect_timeout)
        )
        async with await connecting as src:
            job = _Archiver(src, storage, get_codec(codec), interval, max_bytes, on_chunk)
            job.policy = policy
            job.recipients = recipients
            job.stats = stats or ArchiverStats()
            job.max_buffer, job.backoff = max_buffer, (retry_delay, retry_max_delay)
            job.delay = retry_delay
            job.tripwires = tripwires
            job.stager = stager
            if stager is not None:
                stager.attach(source, storage, job.want, connect_timeout)
            refreshing = None
            if tripwires is not None and tripwires.databases("shrink"):
                tripwires.baseline = await read_baseline(storage, tripwires.databases("shrink"))
                refreshing = asyncio.create_task(
                    keep_baseline(tripwires, storage, baseline_refresh)
                )
            try:
                resume = await job.resume_point()
                tail = OplogTail(
                    src, resume, from_newest=start == "now", await_ms=await_ms, settle=settle
                )
                await job.run(tail)
            finally:
                if refreshing is not None:
                    refreshing.cancel()
                    await asyncio.gather(refreshing, return_exceptions=True)
                if stager is not None:  # while the storage is still open
                    await shielded(stager.close())


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
        self.tail: OplogTail | None = None
        self.late: list[Ts] = []  # read after a chunk past them was written
        self.max_buffer = DEFAULT_MAX_BUFFER
        self.backoff = (DEFAULT_RETRY_DELAY, DEFAULT_RETRY_MAX_DELAY)
        self.delay = DEFAULT_RETRY_DELAY
        self.retry_at = 0.0  # monotonic: no write attempt before then
        self.failing_since: float | None = None
        self.orphans: list[str] = []  # chunk objects whose sidecar failed, to delete
        self.tripwires: Tripwires | None = None
        self.policy: LockPolicy | None = None  # S3 Object Lock on what is written
        self.recipients: list[Recipient] | None = None
        self.stager: Stager | None = None
        self.stored_to: Ts | None = None  # the newest ts a stored chunk reaches
        self.wanted: Ts | None = None  # write a chunk reaching it once it has settled

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
        self._stored(last.last_ts)
        return Resume(last.last_ts, await self._stamps(last))

    async def _stamps(self, last: ChunkInfo) -> list[Ts]:
        """The chunk's timestamps, to drop entries seen again; none if it is corrupt
        (then only entries after its ``last_ts`` are taken). An encrypted chunk
        gives none too: the archiver holds no key to read it."""
        if last.encrypted:
            return []
        data = await self.storage.read_bytes(last.object_key, limit=chunks.MAX_CHUNK_BYTES)
        try:
            return [entry_ts(e) for e in chunks.split_entries(chunks.decode_chunk(data, last))]
        except CorruptArchive as exc:
            log.warning("%s; resuming after its last entry %s", exc, last.last_ts)
            return []

    async def run(self, tail: OplogTail) -> None:
        self.tail = tail
        try:
            async with contextlib.aclosing(tail.stream()) as stream:
                async for event in stream:
                    if isinstance(event, Gap):
                        await self._until_written(functools.partial(self._flush_then_gap, event))
                        continue
                    self.add(event)
                    if self.size >= self.max_buffer:
                        await self._until_written(self._make_room)
                    elif self.due():
                        await self._attempt(self.flush)
        except BaseException:
            await self._last_flush()
            raise
        await self._last_flush()  # (the stream never ends; kept for a tail that does)

    async def _last_flush(self) -> None:
        """Write what is buffered before leaving; if the destination is down, the
        reason for leaving stands and the next start reads the entries again."""
        try:
            await shielded(self.flush(final=True))
        except StorageError as exc:
            log.warning(
                "%s: the last %d entries read are not archived; the next start reads them "
                "again from the oplog while it holds them",
                exc,
                len(self.entries),
            )

    async def _make_room(self) -> None:
        """The buffer is full: write its settled entries, or all of them if none
        has settled yet (memory stays bounded; a later entry becomes a gap)."""
        await self.flush(final=not self._ready(False))

    async def _flush_then_gap(self, gap: Gap) -> None:
        await self.flush(final=True)
        await self.record_gap(gap)

    async def _attempt(self, write: Callable[[], Awaitable[None]]) -> bool:
        """One try; a destination outage is logged and retried later (module doc)."""
        try:
            await write()
        except StorageError as exc:
            if type(exc) is not StorageError:  # denied, no bucket...: no retry helps
                raise
            self._failed(exc)
            return False
        if self.failing_since is not None:
            down = time.monotonic() - self.failing_since
            log.warning("oplog chunks are written again, after %.0f s", down)
        self.failing_since, self.delay, self.retry_at = None, self.backoff[0], 0.0
        return True

    def _failed(self, exc: StorageError) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        log.warning(
            "%s; %d bytes of oplog entries held (at most %d), retrying in %.1f s",
            exc,
            self.size,
            self.max_buffer,
            self.delay,
        )
        self.retry_at = now + self.delay
        self.delay = min(self.delay * 2, self.backoff[1])

    async def _until_written(self, write: Callable[[], Awaitable[None]]) -> None:
        """Retry until written, reading nothing more; exit once the oplog rolls
        past the last entry read, as the entries after it are then lost."""
        while not await self._attempt(write):
            await asyncio.sleep(max(0.0, self.retry_at - time.monotonic()))
            await self._check_rollover()

    async def _check_rollover(self) -> None:
        last = self.tail.last if self.tail is not None else None
        try:
            oldest = await bound(self.src, newest=False)
        except SourceError as exc:
            log.warning("cannot read the oplog bounds of %s: %s", self.src.hosts, exc)
            return
        if last is not None and oldest is not None and oldest > last:
            raise StorageError(
                f"the oplog of {self.src.hosts} rolled over past the last entry read ({last}; "
                f"it now starts at {oldest}) while {self.storage.url} could not be written to "
                f"for {time.monotonic() - (self.failing_since or 0):.0f} s: entries after "
                f"{last} are lost; start the archiver again once the destination is back, "
                "and it records the gap"
            )

    def add(self, batch: Batch) -> None:
        if batch.entries and not self.entries:
            self.opened = time.monotonic()
        if batch.entries:
            log.debug("read %d entries up to %s", len(batch.entries), max(batch.stamps))
        for entry, ts in zip(batch.entries, batch.stamps, strict=True):
            if self.tripwires is not None:  # late entries too: they happened
                self.tripwires.observe(entry, ts)
            if self.prev is not None and ts <= self.prev:
                log.warning("oplog entry %s became visible after a chunk past it was written", ts)
                self.late.append(ts)
                continue
            self.entries.append(entry)
            self.stamps.append(ts)
            self.size += len(entry)

    def want(self, ts: Ts) -> None:
        """Write a chunk reaching ``ts`` as soon as it has settled (--stage)."""
        if self.stored_to is not None and self.stored_to >= ts:
            if self.stager is not None:
                self.stager.stored(self.stored_to)
            return
        self.wanted = ts if self.wanted is None else max(self.wanted, ts)

    def due(self) -> bool:
        if not self.entries or time.monotonic() < self.retry_at:
            return False
        if self.wanted is not None and self.tail is not None:
            horizon = self.tail.settled()
            if horizon is not None and horizon >= self.wanted:
                return True
        return self.size >= self.max_bytes or time.monotonic() - self.opened >= self.interval

    def _ready(self, final: bool) -> set[Ts]:
        """The buffered entries that may be written now: all when ``final``, else
        those up to the tail's settled ts (module doc)."""
        if final or self.tail is None:
            return set(self.stamps)
        horizon = self.tail.settled()
        return {ts for ts in self.stamps if horizon is not None and ts <= horizon}

    async def flush(self, final: bool = False) -> None:
        """Write the settled buffered entries as one chunk: object, then sidecar."""
        ready = self._ready(final)
        if self.late and (ready or final):
            await self._record_late(min(ready) if ready else None)
        if not ready:
            return
        pairs = list(zip(self.entries, self.stamps, strict=True))
        chunk = sorted(((ts, e) for e, ts in pairs if ts in ready), key=lambda p: p[0])
        entries, stamps = [e for _, e in chunk], [ts for ts, _ in chunk]
        raw, packed, digest = await asyncio.to_thread(
            chunks.encode_chunk, entries, self.codec, self.recipients
        )
        first, last = min(stamps), max(stamps)
        key = chunks.chunk_key(first, last, self.codec, encrypted=bool(self.recipients))
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
            encrypted=bool(self.recipients),
        )
        lock = locked(None if self.policy is None else self.policy.retention())
        await self.storage.put(key, packed, **lock)
        try:
            await self.storage.put(info.key, info.to_json(), **lock)
        except BaseException:
            try:
                await shielded(self.storage.delete(key))
            except StorageError:  # the destination is down: delete it once it is back
                self.orphans.append(key)
            raise
        await self._sweep(key)
        self.entries = [e for e, ts in pairs if ts not in ready]
        self.stamps = [ts for _, ts in pairs if ts not in ready]
        self.size = sum(len(e) for e in self.entries)
        self.opened = time.monotonic()
        self.prev = last
        self._count(info)
        self._stored(last)

    def _stored(self, last: Ts) -> None:
        if self.stored_to is None or last > self.stored_to:
            self.stored_to = last
        if self.wanted is not None and self.stored_to >= self.wanted:
            self.wanted = None
        if self.stager is not None:
            self.stager.stored(self.stored_to)

    async def _sweep(self, written: str) -> None:
        """Delete the chunk objects whose sidecar could not be written (best effort:
        the next start deletes any left), except one just written again."""
        for key in [k for k in self.orphans if k != written]:
            try:
                await self.storage.delete(key)
            except StorageError:
                return
            self.orphans.remove(key)
        self.orphans = [k for k in self.orphans if k != written]

    async def _record_late(self, before: Ts | None) -> None:
        """A gap from just before the earliest late entry to ``before`` (the next
        chunk's first ts; None: just after the last written ts), then a new span."""
        assert self.prev is not None
        after = _previous(min(self.late))
        end = before or Ts(self.prev.t, self.prev.i + 1)
        reason = (
            f"{len(self.late)} entries (from {min(self.late)}) became visible in the oplog of "
            f"{self.src.hosts} after later ones were archived; they are not archived"
        )
        await self._put_gap(GapInfo(after, end, datetime.now(UTC), reason))
        self.late = []

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
        await self._put_gap(GapInfo(gap.after, gap.before, datetime.now(UTC), reason))

    async def _put_gap(self, info: GapInfo) -> None:
        log.warning("oplog gap after %s, before %s: %s", info.after, info.before, info.reason)
        lock = locked(None if self.policy is None else self.policy.retention())
        await self.storage.put(chunks.gap_key(info.after, info.before), info.to_json(), **lock)
        self.prev = None
        self.stats.gaps += 1


def _previous(ts: Ts) -> Ts:
    """The ts just before ``ts``."""
    return Ts(ts.t, ts.i - 1) if ts.i else Ts(ts.t - 1, 0xFFFFFFFF)


async def list_oplog(destination: str | Storage, *, s3: S3Config | None = None) -> Coverage:
    """What the oplog chunks at ``destination`` cover: spans, gaps, incomplete chunks."""
    async with opened(destination, s3) as storage:
        return await chunks.read_coverage(storage)
