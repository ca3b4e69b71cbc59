"""TeeWriter: one stream of writes to several ObjectWriters at once.

The first writer is the primary: its failure is the tee's failure (every
other writer is then aborted). Any other writer that fails is dropped (it
has aborted itself, as every ObjectWriter does) and its error kept in
``failed``; the others go on. So one read of the source feeds every copy,
and a copy whose destination goes down costs only that copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from .._aio import shielded
from .base import ObjectInfo, ObjectWriter


class TeeWriter:
    def __init__(self, primary: ObjectWriter, others: Sequence[ObjectWriter]) -> None:
        self.primary = primary
        self.others = list(others)
        self.failed: dict[int, Exception] = {}
        """Index in ``others`` of each dropped writer: its error."""
        self.committed: dict[int, ObjectInfo] = {}
        """Index in ``others`` of each writer committed."""
        self._done = False

    @property
    def discarded(self) -> bool | None:
        """The primary's: the others' cleanup is theirs (``failed``)."""
        return self.primary.discarded

    @discarded.setter
    def discarded(self, value: bool | None) -> None:
        self.primary.discarded = value

    @property
    def position(self) -> int:
        return self.primary.position

    def live(self) -> list[int]:
        return [i for i in range(len(self.others)) if i not in self.failed]

    async def write(self, data: bytes) -> None:
        await self._all(lambda w: w.write(data))

    async def reserve(self, placeholder: bytes) -> int:
        offset = self.primary.position
        await self._all(lambda w: w.reserve(placeholder))
        return offset

    async def fill(self, offset: int, data: bytes) -> None:
        await self._all(lambda w: w.fill(offset, data))

    async def commit(self) -> ObjectInfo:
        """Commit the primary, then the others (a failure of one is recorded)."""
        try:
            info = await self.primary.commit()
        except BaseException:
            await shielded(self._abort_others())
            raise
        self._done = True
        for index in self.live():
            try:
                self.committed[index] = await self.others[index].commit()
            except Exception as exc:
                self.failed[index] = exc
        return info

    async def abort(self) -> None:
        await asyncio.gather(
            self.primary.abort(), *(w.abort() for w in self.others), return_exceptions=True
        )

    async def __aenter__(self) -> TeeWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            await shielded(self.abort())

    # -- internals

    async def _all(self, step: Callable[[ObjectWriter], Awaitable[object]]) -> None:
        """Run one step on every live writer at once; drop the others that fail."""
        live = self.live()
        results = await asyncio.gather(
            step(self.primary), *(step(self.others[i]) for i in live), return_exceptions=True
        )
        first = results[0]
        if isinstance(first, BaseException):
            await shielded(self._abort_others())
            raise first
        for index, result in zip(live, results[1:], strict=True):
            if isinstance(result, Exception):
                self.failed[index] = result
            elif isinstance(result, BaseException):  # a cancellation: stop everything
                await shielded(self.abort())
                raise result

    async def _abort_others(self) -> None:
        await asyncio.gather(*(w.abort() for w in self.others), return_exceptions=True)
