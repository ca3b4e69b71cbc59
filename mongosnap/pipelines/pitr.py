"""Restore to a point in time: which archive, which oplog chunks, which entries.

A target instant is reached from the newest complete archive whose
consistent point (its manifest's ``oplog.last_ts``) is at or before it: the
archive's own ``dump/oplog.bson`` brings the restored collections to that
point, and the chunks under ``oplog/`` carry them from there to the target.
An archive without an oplog window has no consistent point (its collections
were read at different moments while writes went on) and is never chosen.
Coverage must be continuous from the consistent point to the target: a gap,
recorded or not, or chunks that end before the target refuse the restore
before anything is written (docs/pitr.md, "Restore to a point in time").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bson.codec_options import CodecOptions
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from .._errors import (
    NoBackupsFound,
    NoIdentity,
    PointInTimeUnavailable,
    ReplayError,
    SourceError,
    UsageError,
)
from ..archive.bsonstream import BsonSplitter
from ..catalog import LATEST, ArchiveInfo, ArchiveStatus, list_archives, resolve
from ..encryption import NO_KEY_HINT, Keys
from ..oplog.chunks import ChunkInfo, Coverage, GapInfo, decode_chunk, read_coverage
from ..oplog.position import Ts
from ..oplog.tail import entry_ts
from ..storage import Storage
from .engine import Engine

log = logging.getLogger("mongosnap.restore")

Warn = Callable[[str], None]
_LENIENT = CodecOptions(document_class=RawBSONDocument, unicode_decode_error_handler="replace")


def parse_time(text: str) -> Ts:
    """``--to-time``: an ISO 8601 instant with a zone, as the oplog ts that ends
    its second (every entry logged within that second is included)."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise UsageError(f"give the time zone of {text!r} (e.g. 2026-12-01T10:00:00Z)")
    return Ts(int(when.astimezone(UTC).timestamp()), 0xFFFFFFFF)


def consistent_point(info: ArchiveInfo) -> Ts | None:
    """The archive's consistent point, or None when it has none (no oplog window)."""
    if info.status is not ArchiveStatus.COMPLETE or info.manifest is None:
        return None
    window = info.manifest.oplog
    return None if window is None else Ts(*window.last_ts)


@dataclass(frozen=True)
class PitrPlan:
    """The archive, the chunks after its consistent point, and the target."""

    archive: ArchiveInfo
    start: Ts
    target: Ts
    chunks: list[ChunkInfo] = field(default_factory=list)
    identities: Sequence[Any] = field(default=(), repr=False)
    """What opens the encrypted chunks (age identities), set by unlock()."""


async def unlock(storage: Storage, plan: PitrPlan, keys: Keys | None) -> PitrPlan:
    """The plan with the identities that open its encrypted chunks, each
    chunk's header opened now, before anything is staged or written.

    Raises NoIdentity (no key, or one that does not open a chunk), KmsError
    or DecryptionFailed; a plan without encrypted chunks is returned as is.
    """
    encrypted = [c for c in plan.chunks if c.encrypted]
    if not encrypted:
        return plan
    if keys is None or keys.empty:
        raise NoIdentity(f"oplog chunk {encrypted[0].object_key} is encrypted: {NO_KEY_HINT}")
    identities = keys.resolved()
    from ..crypto.storage import DecryptedView

    view = DecryptedView(storage, identities)
    for chunk in encrypted:  # a few KiB each; the unwrapping runs in a thread
        try:
            await view.header(chunk.object_key)
        except NoIdentity:
            raise NoIdentity(
                f"oplog chunk {chunk.object_key}: none of the keys given opens it"
            ) from None
    return replace(plan, identities=identities)


async def plan(storage: Storage, ref: str, target: Ts, warn: Warn = log.warning) -> PitrPlan:
    """Choose the archive (``latest``: the newest usable one) and the chunks.

    Raises PointInTimeUnavailable, before anything is written, when no
    archive is consistent at or before ``target`` or the chunks do not cover
    the time from its consistent point to ``target`` without a gap.
    """
    archive = await _choose(storage, ref, target, warn)
    start = consistent_point(archive)
    assert start is not None
    chunks = [] if start >= target else _covering(await read_coverage(storage), start, target)
    return PitrPlan(archive, start, target, chunks)


async def plan_window(
    storage: Storage, database: str, before: Ts, end: Ts | None, warn: Warn
) -> PitrPlan:
    """The newest archive of ``database`` consistent at or before ``before`` and
    every chunk of the one span that continues from its consistent point, to
    the span's end (``target``): what undo reads to know a window's writes and
    the later ones.

    NoBackupsFound when the destination holds no archive; PointInTimeUnavailable
    when no archive of ``database`` fits, or the span has a gap or ends before
    ``end`` (the span's end when None) or before ``before``.
    """
    archives = await list_archives(storage)
    if not archives:
        raise NoBackupsFound(f"no archive in {storage.url}")
    usable = [
        (point, a)
        for a in archives
        if (point := consistent_point(a)) is not None and point <= before and _holds(a, database)
    ]
    if not usable:
        without = [a.key for a in archives if consistent_point(a) is None]
        raise PointInTimeUnavailable(
            f"no complete archive of {database} in {storage.url} is consistent at or before "
            f"ts {before}" + _skipped(without)
        )
    start, archive = max(usable, key=lambda pair: (pair[0], pair[1].key))
    coverage = await read_coverage(storage)
    span = next((s for s in coverage.spans if s.first <= start <= s.last), None)
    if span is None:
        raise PointInTimeUnavailable(
            f"no oplog chunk under oplog/ covers the archive's consistent point {start}"
        )
    _covering(coverage, start, max(before, span.last if end is None else end))
    chunks = [
        c
        for c in coverage.chunks
        if span.first <= c.first_ts and c.last_ts <= span.last and c.last_ts > start
    ]
    return PitrPlan(archive, start, span.last, chunks)


def _holds(info: ArchiveInfo, database: str) -> bool:
    assert info.manifest is not None  # it has a consistent point
    return any(c.database == database for c in info.manifest.collections)


async def _choose(storage: Storage, ref: str, target: Ts, warn: Warn) -> ArchiveInfo:
    if ref != LATEST:
        info = await resolve(storage, ref)
        point = consistent_point(info)
        if point is None:
            raise PointInTimeUnavailable(
                f"{info.key} has no oplog window (not taken with backup --oplog, or not "
                "complete): it has no consistent point to replay from"
            )
        if point > target:
            raise PointInTimeUnavailable(
                f"{info.key} is consistent at ts {point}, after the target {target}"
            )
        return info
    archives = await list_archives(storage)
    usable = [(p, a) for a in archives if (p := consistent_point(a)) is not None and p <= target]
    without = [a.key for a in archives if consistent_point(a) is None]
    if not usable:
        raise PointInTimeUnavailable(
            f"no complete archive in {storage.url} is consistent at or before ts {target}"
            + _skipped(without)
        )
    point, chosen = max(usable, key=lambda pair: (pair[0], pair[1].key))
    newer = [
        a.key
        for a in archives
        if consistent_point(a) is None and chosen.created < a.created <= _time(target)
    ]
    if newer:
        warn(f"restoring from {chosen.key} (consistent at ts {point})" + _skipped(newer))
    return chosen


def _time(ts: Ts) -> datetime:
    return datetime.fromtimestamp(ts.t, UTC)


def _skipped(keys: list[str]) -> str:
    if not keys:
        return ""
    return (
        f"; {len(keys)} archive(s) without an oplog window skipped (e.g. {max(keys)}): "
        "their finish time is not a consistent point"
    )


def _covering(coverage: Coverage, start: Ts, target: Ts) -> list[ChunkInfo]:
    """The chunks of the one span covering [start, target]; PointInTimeUnavailable if none."""
    gaps = [g for g in coverage.gaps if g.after < target and g.before > start]
    if gaps:
        raise PointInTimeUnavailable(
            f"the archived oplog has a gap between the archive's consistent point {start} "
            f"and the target {target}: {_describe_gap(gaps[0])}"
        )
    span = next((s for s in coverage.spans if s.first <= start <= s.last), None)
    if span is None:
        raise PointInTimeUnavailable(
            f"no oplog chunk under oplog/ covers the archive's consistent point {start}"
        )
    if span.last < target:
        raise PointInTimeUnavailable(
            f"no oplog chunk reaches the target {target}: the archived oplog continuing "
            f"from {start} ends at {span.last}"
        )
    return [
        c
        for c in coverage.chunks
        if span.first <= c.first_ts and c.last_ts <= span.last
        if c.last_ts > start and c.first_ts <= target
    ]


def _describe_gap(gap: GapInfo) -> str:
    return f"entries after {gap.after} and before {gap.before} may be missing ({gap.reason})"


async def chunk_entries(storage: Storage, pitr: PitrPlan) -> AsyncIterator[bytes]:
    """The chunks' entries after the consistent point, up to the target inclusive.

    Each chunk is checked against its sidecar (size, SHA-256) and its entries
    validated as BSON before one is handed out.
    """
    for chunk in pitr.chunks:
        data = await storage.read_bytes(chunk.object_key, limit=chunk.object_bytes)
        raw = await asyncio.to_thread(decode_chunk, data, chunk, pitr.identities)
        splitter = BsonSplitter(max_documents=chunk.count, max_bytes=chunk.bson_bytes)
        entries = splitter.feed(raw)
        splitter.close()
        for entry in entries:
            ts = _entry_ts(entry, chunk)
            if ts > pitr.target:
                return
            if ts > pitr.start:
                yield entry


def _entry_ts(entry: bytes, chunk: ChunkInfo) -> Ts:
    """An entry's ts; ReplayError (the replay stops there) when it cannot be read."""
    try:
        return entry_ts(entry)
    except SourceError as exc:
        problem = f"has no valid ts ({exc})"
    except (BSONError, RecursionError) as exc:
        problem = f"cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})"
    raise ReplayError(f"oplog chunk {chunk.object_key}: entry{_lenient_ts(entry)} {problem}")


def _lenient_ts(entry: bytes) -> str:
    """`` ts=SECONDS:INC`` read past undecodable strings, for naming the entry; '' if none."""
    try:
        ts = RawBSONDocument(entry, _LENIENT)["ts"]
    except (KeyError, BSONError, RecursionError):
        return ""
    return f" ts={ts.time}:{ts.inc}" if isinstance(ts, Timestamp) else ""


async def since(
    storage: Storage, archive: ArchiveInfo, coverage: Coverage | None = None
) -> PitrPlan | None:
    """The archive and every archived entry after its consistent point, as far as
    one continuous span of chunks reaches; None when no span covers that point
    (or the archive has none). Heal replays this to the instant before a loss.
    ``coverage``: the destination's, when the caller has read it already."""
    start = consistent_point(archive)
    if start is None:
        return None
    if coverage is None:
        coverage = await read_coverage(storage)
    span = next((s for s in coverage.spans if s.first <= start <= s.last), None)
    if span is None:
        return None
    end = _before_gaps(coverage.gaps, start, span.last)
    if end is None:
        return None
    chunks = [
        c
        for c in coverage.chunks
        if span.first <= c.first_ts <= end and c.last_ts <= span.last and c.last_ts > start
    ]
    return PitrPlan(archive, start, end, chunks)


def _before_gaps(gaps: list[GapInfo], start: Ts, end: Ts) -> Ts | None:
    """How far after ``start`` the entries are known whole: ``end``, or the
    first recorded gap inside the span (chunks can continue each other across
    a gap the archiver recorded: entries it could not read); None when a gap
    begins at or before ``start``."""
    for gap in gaps:
        if gap.before <= start or gap.after >= end:
            continue
        if gap.after <= start:
            log.warning(
                "the archived oplog has a gap at the archive's point: %s", _describe_gap(gap)
            )
            return None
        log.warning("replay stops before a gap in the archived oplog: %s", _describe_gap(gap))
        end = gap.after
    return end


async def entries(engine: Engine, plan: PitrPlan | None) -> AsyncIterator[bytes]:
    """The archive's oplog member, then (with a plan) its chunks' entries."""
    async for entry in engine.oplog_entries():
        yield entry
    if plan is not None:
        async for entry in chunk_entries(engine.storage, plan):
            yield entry
