"""Ranged reads: one large collection read as ``_id`` ranges at once, written in order.

A collection whose size (``collStats``) is at least two ``range_size`` is cut
into ``_id`` ranges of about ``range_size`` bytes each. The ranges are read by
up to ``window`` cursors at once, each into its own read-ahead lane
(pipelines/readahead.py); the writer takes the lanes in range order, so the
collection's ``.bson`` member is still one contiguous run of exact size. A
range not yet being written is a lane ahead: it waits for the shared read-ahead
budget when that is full and for a reader permit (``--parallel``), so memory
stays bounded whatever the collection's size.

Exactly once. The ranges partition their type bracket: the first is open below
(``{_id: {$lt: b1}}``), the last open above (``{_id: {$gte: bk}}``), the others
``[b_i, b_i+1)``. They are cut only when the smallest and the largest ``_id``
(by the ``_id`` sort, which groups types) are of one type whose boundaries can
be computed: ObjectIds (their 12 bytes as a number) or numbers (ints and
doubles compare across types, as do Decimal128 values between them). Then every
``_id`` at split time is in that bracket, and each matches exactly one range.
``_id`` is immutable, so an updated document never moves between ranges: every
document that exists for the whole dump is read exactly once, by its range's
cursor, which like a single cursor returns it once. A document inserted during
the dump is in at most one range (or in none, if its ``_id`` is of another
type), never in two. Mixed or other types (strings, dates...): one cursor.

Consistency is that of one cursor: no snapshot; ``backup --oplog`` makes the
archive consistent at its oplog's ``last_ts`` either way (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

from bson import ObjectId

from .._errors import SourceError
from ..source import CollectionSpec, Source
from .readahead import Budget, Lane

MAX_RANGES = 1024
"""A collection is never cut into more ranges (each one is a find on the server)."""

Batch = tuple[bytes, int]  # concatenated BSON documents, how many
Filter = dict[str, Any]

log = logging.getLogger("mongosnap.backup")


def splittable(spec: CollectionSpec) -> bool:
    """Only plain collections: a capped one must keep its natural (insertion) order."""
    return spec.type == "collection" and not spec.options.get("capped")


async def plan(src: Source, spec: CollectionSpec, range_size: int) -> list[Filter] | None:
    """The ``_id`` range filters to read ``spec`` with, or None for one cursor.

    Three cheap commands: ``collStats`` (its size), then the smallest and the
    largest ``_id`` (a sort on the ``_id`` index with limit 1), only if the size
    calls for ranges. A server that refuses them gets one cursor.
    """
    try:
        stats = await src.raw_command(spec.database, {"collStats": spec.name})
        size = stats.get("size")
        if not isinstance(size, int | float) or size < 2 * range_size:
            return None
        low = await _end_id(src, spec, 1)
        high = await _end_id(src, spec, -1)
    except SourceError as exc:
        log.debug("%s: no ranged read (%s)", spec.namespace, exc)
        return None
    pieces = min(MAX_RANGES, math.ceil(size / range_size))
    bounds = boundaries(low, high, pieces)
    return filters(bounds) if bounds else None


async def _end_id(src: Source, spec: CollectionSpec, direction: int) -> Any:
    """The smallest (1) or largest (-1) ``_id``, or None if the collection is empty."""
    reply = await src.raw_command(
        spec.database,
        {
            "find": spec.name,
            "sort": {"_id": direction},
            "projection": {"_id": 1},
            "limit": 1,
            "singleBatch": True,
        },
    )
    batch = reply["cursor"]["firstBatch"]
    return batch[0].get("_id") if batch else None


def boundaries(low: Any, high: Any, pieces: int) -> list[Any]:
    """Up to ``pieces - 1`` increasing values in (low, high], empty if the two
    ``_id`` values are not of one type this module can cut (see the docstring)."""
    if pieces < 2:
        return []
    if isinstance(low, ObjectId) and isinstance(high, ObjectId):
        lo, hi = int.from_bytes(low.binary, "big"), int.from_bytes(high.binary, "big")
        return [ObjectId(p.to_bytes(12, "big")) for p in _spread(lo, hi, pieces)]
    if _number(low) and _number(high):
        if isinstance(low, float) or isinstance(high, float):
            if not (math.isfinite(low) and math.isfinite(high)):
                return []  # NaN sorts first among numbers; infinities cannot be cut
            step = (high - low) / pieces
            return sorted({p for i in range(1, pieces) if low < (p := low + step * i) <= high})
        return _spread(int(low), int(high), pieces)
    return []


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _spread(lo: int, hi: int, pieces: int) -> list[int]:
    """Integer cut points strictly above ``lo``, at most ``hi``, evenly spread."""
    return sorted({lo + (hi - lo) * i // pieces for i in range(1, pieces)} - {lo})


def filters(bounds: list[Any]) -> list[Filter]:
    """The ranges around increasing cut points: open below, [b_i, b_i+1), open above."""
    cuts: list[Filter] = [{"$lt": bounds[0]}]
    cuts += [{"$gte": a, "$lt": b} for a, b in itertools.pairwise(bounds)]
    cuts.append({"$gte": bounds[-1]})
    return [{"_id": cut} for cut in cuts]


async def fill(
    lane: Lane[Batch],
    batches: AsyncGenerator[Batch, None],
    split: Callable[[int], Awaitable[bool]] | None = None,
) -> None:
    """Every batch into ``lane`` (holding a reader permit), then close it.

    ``split`` is asked with the first batch's document count; True drops that
    batch and ends this read (the collection goes as ranges instead).
    """
    async with contextlib.aclosing(batches), lane.reading():
        while True:
            async with lane.fetching():
                item = await anext(batches, None)
                if item is None:
                    break
                if split is not None and await split(item[1]):
                    break
                split = None
                await lane.put(item, len(item[0]))
    await lane.close()


class RangedRead:
    """One collection's ranges: read at most ``window`` ahead of the one being written.

    ``run`` starts range ``i``'s reader once the writer has finished range
    ``i - window`` (readers ahead also need a reader permit, and fetch within
    the budget); ``batches`` gives the writer every batch in range order.
    """

    def __init__(self, ranges: list[Filter], budget: Budget, depth: int, window: int) -> None:
        self.ranges = ranges
        self.lanes = [Lane[Batch](budget, depth) for _ in ranges]
        self.window = max(1, window)
        self._written = 0  # ranges the writer has finished
        self._changed = asyncio.Condition()

    async def run(self, read: Callable[[Filter, Lane[Batch]], Coroutine[Any, Any, None]]) -> None:
        """Read every range with ``read(filter, lane)``; the first error stops all."""
        async with asyncio.TaskGroup() as group:
            for i, (where, lane) in enumerate(zip(self.ranges, self.lanes, strict=True)):
                await self._turn(i)
                group.create_task(read(where, lane))

    async def _turn(self, i: int) -> None:
        """Wait until range ``i`` is within the window."""
        async with self._changed:
            await self._changed.wait_for(lambda: i < self._written + self.window)

    async def batches(self) -> AsyncGenerator[Batch, None]:
        """Every range's batches, in range order (each lane the head in its turn)."""
        for lane in self.lanes:
            await lane.promote()
            while (item := await lane.get()) is not None:
                yield item
            async with self._changed:
                self._written += 1
                self._changed.notify_all()

    async def discard(self) -> None:
        """Drop what every range buffered (their readers have been stopped)."""
        for lane in self.lanes:
            await lane.discard()
