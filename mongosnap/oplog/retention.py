"""Which oplog chunks no kept archive needs, once prune has chosen the archives.

A point-in-time restore or heal starts from an archive's consistent point (its
manifest's ``oplog.last_ts``) and needs one unbroken span of chunks from there
on. So the chunks that end before the chunk holding the oldest such point (the
*anchor*: the last chunk starting at or before it) serve no kept archive, and
neither do the gap objects that lie wholly before the anchor. The anchor and
everything after it stay, and so does the newest chunk, where the archiver
resumes. A kept archive whose manifest cannot be read now (archived in Glacier,
an unreadable sidecar) counts with the time in its name, which no consistent
point precedes. With no point at all, nothing is deleted.

Deleting runs as for archives: the sidecar first (the chunk is then incomplete,
ignored by readers), then the chunk object. A chunk or gap object S3 Object
Lock still protects is left for a later run (``OplogPrune.locked``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..pipelines.locking import locked_until
from ..storage import Storage
from .chunks import ChunkInfo, Coverage, GapInfo, read_coverage, sidecar_key
from .position import Ts


@dataclass(frozen=True)
class OplogPrune:
    """What pruning the oplog did (or, in a dry run, would do)."""

    kept_from: Ts | None = None
    """The first ts still covered after pruning; None when nothing was pruned."""
    chunks: list[ChunkInfo] = field(default_factory=list)
    gaps: list[GapInfo] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    """Keys of unneeded chunks and gap objects kept while a lock holds them."""

    @property
    def bytes_freed(self) -> int:
        return sum(c.object_bytes for c in self.chunks)

    def to_dict(self) -> dict[str, object]:
        return {
            "kept_from": None if self.kept_from is None else str(self.kept_from),
            "chunks_deleted": [c.object_key for c in self.chunks],
            "gaps_deleted": [g.key for g in self.gaps],
            "locked": self.locked,
            "bytes_freed": self.bytes_freed,
        }


async def _unlocked(storage: Storage, found: OplogPrune) -> OplogPrune:
    """``found`` without the chunks and gaps a lock still protects."""
    now = datetime.now(UTC)
    chunks: list[ChunkInfo] = []
    gaps: list[GapInfo] = []
    held: list[str] = []
    for chunk in found.chunks:
        keys = [sidecar_key(chunk.object_key), chunk.object_key]
        if await locked_until(storage, keys, now) is None:
            chunks.append(chunk)
        else:
            held.append(chunk.object_key)
    for gap in found.gaps:
        if await locked_until(storage, [gap.key], now) is None:
            gaps.append(gap)
        else:
            held.append(gap.key)
    return replace(found, chunks=chunks, gaps=gaps, locked=held)


def unneeded(coverage: Coverage, point: Ts) -> OplogPrune:
    """The chunks and gap objects that lie wholly before the anchor of ``point``."""
    anchor = None
    for chunk in coverage.chunks:  # in time order
        if chunk.first_ts <= point:
            anchor = chunk
    if anchor is None:
        return OplogPrune()
    chunks = [c for c in coverage.chunks if c.last_ts < anchor.first_ts]
    gaps = [g for g in coverage.gaps if g.key and g.before <= anchor.first_ts]
    return OplogPrune(anchor.first_ts, chunks, gaps)


async def prune_oplog(storage: Storage, points: Iterable[Ts], dry_run: bool) -> OplogPrune:
    """Delete (unless ``dry_run``) the oplog chunks and gap objects that no kept
    archive needs; ``points``: where the kept archives may start a replay."""
    point = min(points, default=None)
    if point is None:
        return OplogPrune()
    found = await _unlocked(storage, unneeded(await read_coverage(storage), point))
    if not dry_run:
        for chunk in found.chunks:
            await storage.delete(sidecar_key(chunk.object_key))
            await storage.delete(chunk.object_key)
        for gap in found.gaps:
            await storage.delete(gap.key)
    return found
