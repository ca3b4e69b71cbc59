"""What every ObjectWriter shares: offsets, reservations, and abort on failure.

A backend subclasses BaseWriter and supplies five steps (_append, _fill,
_commit, _discard and, through __init__, its key). BaseWriter checks the
caller's use of reserve/fill, keeps the writer's state, and turns any error or
cancellation inside write/reserve/fill/commit into an abort before re-raising,
so a failed writer never leaves a partial object or upload behind.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from types import TracebackType
from typing import NoReturn, TypeVar

from .._errors import StorageError
from ._keys import check_key
from .base import ObjectInfo

_T = TypeVar("_T")

log = logging.getLogger("mongosnap.storage")

# Cleanups that outlive a second cancellation; kept here so they are not
# garbage-collected while they run.
_cleanups: set[asyncio.Task[None]] = set()


class BaseWriter(ABC):
    def __init__(self, key: str) -> None:
        self.key = check_key(key)
        self._position = 0
        self._reservations: dict[int, int] = {}
        self._state = "open"
        self.discarded: bool | None = None
        """After an abort: whether everything written was removed (False: the
        cleanup failed and an unfinished upload or partial file may remain)."""

    # -- steps a backend supplies -------------------------------------------

    @abstractmethod
    async def _append(self, offset: int, data: bytes) -> None:
        """Append data, which starts at offset (reservations already recorded)."""

    @abstractmethod
    async def _fill(self, offset: int, data: bytes) -> None:
        """Overwrite a reserved region (already removed from _reservations)."""

    @abstractmethod
    async def _commit(self) -> ObjectInfo:
        """Publish the object without overwriting; raise ObjectExists if present."""

    @abstractmethod
    async def _discard(self) -> None:
        """Remove everything written so far; called at most once."""

    # -- the ObjectWriter protocol -------------------------------------------

    @property
    def position(self) -> int:
        return self._position

    async def write(self, data: bytes) -> None:
        self._require_open()
        if not data:
            return
        chunk = bytes(data)
        offset = self._position
        self._position += len(chunk)
        await self._aborting(self._append(offset, chunk))

    async def reserve(self, placeholder: bytes) -> int:
        self._require_open()
        if not placeholder:
            await self._refuse(f"writer for {self.key!r}: cannot reserve zero bytes")
        chunk = bytes(placeholder)
        offset = self._position
        self._reservations[offset] = len(chunk)
        self._position += len(chunk)
        await self._aborting(self._append(offset, chunk))
        return offset

    async def fill(self, offset: int, data: bytes) -> None:
        self._require_open()
        length = self._reservations.pop(offset, None)
        if length is None or len(data) != length:
            await self._refuse(f"writer for {self.key!r}: {_misfit(offset, length, len(data))}")
        await self._aborting(self._fill(offset, bytes(data)))

    async def commit(self) -> ObjectInfo:
        self._require_open()
        if self._reservations:
            first = min(self._reservations)
            await self._refuse(
                f"cannot commit {self.key!r}: the reservation at offset {first} was never filled"
            )
        info = await self._aborting(self._commit())
        self._state = "committed"
        return info

    async def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self.discarded = False
        await self._discard()
        self.discarded = True

    async def __aenter__(self) -> BaseWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await self._abort_after_failure()
        else:
            await self.abort()

    # -- internals -------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state != "open":
            raise StorageError(f"writer for {self.key!r} is already {self._state}")

    async def _aborting(self, step: Awaitable[_T]) -> _T:
        """Await one backend step; any failure aborts the write first.

        A plain coroutine rather than an async context manager: a backup makes
        this call several times per collection, and the manager cost more.
        """
        try:
            return await step
        except BaseException:
            await self._abort_after_failure()
            raise

    async def _refuse(self, message: str) -> NoReturn:
        """A misuse of the writer: abort the write, then raise StorageError."""
        await self._abort_after_failure()
        raise StorageError(message)

    async def _abort_after_failure(self) -> None:
        """Abort while an exception is on its way out; log, never mask it.

        The cleanup runs in its own task, shielded, so that a second
        cancellation does not cut it short.
        """
        if self._state != "open":
            return
        self._state = "aborted"
        self.discarded = False
        cleanup = asyncio.ensure_future(self._discarding())
        _cleanups.add(cleanup)
        cleanup.add_done_callback(_cleanups.discard)
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not clean up the failed write of %r: %s", self.key, exc)

    async def _discarding(self) -> None:
        await self._discard()
        self.discarded = True


def _misfit(offset: int, length: int | None, got: int) -> str:
    """Why a fill() at ``offset`` of ``got`` bytes fits no reservation."""
    if length is None:
        return f"no unfilled reservation at offset {offset}"
    return f"the reservation at offset {offset} holds {length} bytes, fill() got {got}"
