"""Read-ahead lanes: several producers ahead of one in-order consumer, in bounded memory.

The backup writes collections one after another (each archive member one
contiguous run), but may read the next ones meanwhile. Each collection being
read has a ``Lane``: its reader puts items in, the writer takes them out in
order. One ``Budget`` bounds the bytes waiting in all lanes but the head (the
lane the writer is consuming): a reader ahead waits while its next item would
take the budget over its limit. The head lane never waits for the budget, so
a collection larger than the budget still goes through; it is bounded by its
own ``depth`` items instead. When the head is done the next lane becomes the
head, and its bytes already buffered are released as the writer takes them.

A producer ahead also fetches its next item only inside ``fetching()``, which
at most ``fetchers`` producers ahead hold at once: an item fetched but not yet
admitted by the budget is in memory too, and this keeps that to ``fetchers``
items however many lanes there are.

Memory held: at most ``limit`` bytes in lanes ahead, plus ``fetchers`` items
being fetched ahead, plus ``depth`` items in the head lane and the one its
producer is fetching, whatever the number of lanes. Knows nothing of MongoDB
or archives.

A producer may also hold ``reading()`` for its whole run (the backup: while
its cursor is open): at most ``readers`` producers ahead hold it at once, the
head needs none and a lane gives its permit back when it becomes the head, so
producers running at once are at most ``readers + 1`` (the backup's
``--parallel N``: ``readers = N - 1``), however many lanes wait to start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Budget:
    """Bytes buffered by lanes ahead of the head, shared by all of them."""

    def __init__(self, limit: int, fetchers: int = 2) -> None:
        if limit < 0:
            raise ValueError("a read-ahead budget cannot be negative")
        self.limit = limit
        self.fetchers = max(1, fetchers)
        self.fetching = 0  # producers ahead inside Lane.fetching()
        self.readers: int | None = None  # producers ahead inside Lane.reading(); None: no limit
        self.reading = 0
        self.used = 0
        self.peak = 0  # the most bytes ever buffered ahead (for tests and benchmarks)
        self.changed = asyncio.Condition()

    def _take(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)


class Lane(Generic[T]):
    """One producer's items in order, then its end (or the error it ended with)."""

    def __init__(self, budget: Budget, depth: int) -> None:
        self._budget = budget
        self._depth = max(1, depth)
        self._items: deque[tuple[T, int]] = deque()  # item, bytes charged to the budget
        self._head = False
        self._closed = False
        self._error: BaseException | None = None
        self._permit = False  # holds one of the budget's reader permits

    @contextlib.asynccontextmanager
    async def fetching(self) -> AsyncIterator[None]:
        """Hold while fetching the next item and putting it: a lane ahead waits
        for one of the budget's fetcher slots, the head lane never does."""
        budget = self._budget
        async with budget.changed:  # promote() wakes a lane waiting here
            await budget.changed.wait_for(lambda: self._head or budget.fetching < budget.fetchers)
            slot = not self._head
            budget.fetching += slot
        try:
            yield
        finally:
            if slot:
                async with budget.changed:
                    budget.fetching -= 1
                    budget.changed.notify_all()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """Hold for a producer's whole run: a lane ahead waits for one of the
        budget's reader permits, the head lane never does (see the module docstring)."""
        budget = self._budget
        async with budget.changed:  # promote() and the permits given back wake it
            await budget.changed.wait_for(
                lambda: self._head or budget.readers is None or budget.reading < budget.readers
            )
            if not self._head:
                self._permit = True
                budget.reading += 1
        try:
            yield
        finally:
            async with budget.changed:
                self._give_back()

    def _give_back(self) -> None:
        """Return the reader permit, if held (with the budget's lock held)."""
        if self._permit:
            self._permit = False
            self._budget.reading -= 1
            self._budget.changed.notify_all()

    async def put(self, item: T, size: int) -> None:
        """Append an item of ``size`` bytes; waits for room (see the module docstring)."""
        budget = self._budget
        async with budget.changed:
            await budget.changed.wait_for(lambda: self._room(size))
            charged = 0 if self._head else size
            budget._take(charged)
            self._items.append((item, charged))
            budget.changed.notify_all()

    def _room(self, size: int) -> bool:
        if self._head:
            return len(self._items) < self._depth
        return self._budget.used + size <= self._budget.limit

    async def close(self, error: BaseException | None = None) -> None:
        """No more items; ``get`` raises ``error`` (if any) once the items are taken."""
        async with self._budget.changed:
            self._closed = True
            self._error = error
            self._budget.changed.notify_all()

    async def promote(self) -> None:
        """Make this the head lane: from now on it never waits for the budget."""
        async with self._budget.changed:
            self._head = True
            self._give_back()
            self._budget.changed.notify_all()

    async def get(self) -> T | None:
        """The next item, None at the end, or the error the producer closed with."""
        budget = self._budget
        async with budget.changed:
            await budget.changed.wait_for(lambda: bool(self._items) or self._closed)
            if not self._items:
                if self._error is not None:
                    raise self._error
                return None
            item, charged = self._items.popleft()
            budget.used -= charged
            budget.changed.notify_all()
            return item

    async def discard(self) -> None:
        """Drop every buffered item (its producer has been stopped)."""
        async with self._budget.changed:
            self._budget.used -= sum(charged for _, charged in self._items)
            self._items.clear()
            self._closed = True
            self._budget.changed.notify_all()
