"""EncryptingWriter: an ObjectWriter that turns the plaintext it is given into
an age file on another ObjectWriter.

Offsets (``position``, ``reserve``, ``fill``) are plaintext offsets, so a
producer such as the archive writer works unchanged. Each 64 KiB chunk is
sealed and written as soon as it is complete and free of unfilled
reservations. A complete chunk that still holds one is reserved on the inner
writer as a placeholder of its sealed size and sealed into it once its last
reservation is filled. The newest chunk is held until more data comes or
commit(): only then is it known whether it is the last (sealed with the last
flag). Memory: the chunk being filled plus the chunks waiting for a fill.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .._errors import BadKey, StorageError
from ..storage.base import ObjectInfo, ObjectWriter
from . import stream
from .header import NONCE_SIZE, encrypt_header
from .keys import Recipient

_T = TypeVar("_T")

log = logging.getLogger("mongosnap.crypto")
_cleanups: set[asyncio.Future[None]] = set()  # shielded aborts, kept from the GC


@dataclass
class _Chunk:
    data: bytearray = field(default_factory=bytearray)
    unfilled: int = 0
    """Unfilled reservations that touch this chunk."""
    inner_offset: int | None = None
    """Set once the chunk is complete and reserved on the inner writer."""


class EncryptingWriter:
    """See the module docstring. commit() returns the inner writer's ObjectInfo
    (the stored, encrypted object: its size is the ciphertext's)."""

    def __init__(self, inner: ObjectWriter, recipients: Sequence[Recipient]) -> None:
        if not recipients:
            raise BadKey("no recipient to encrypt to")
        self._inner = inner
        self._recipients = list(recipients)
        self._prefix = b""  # made on first use: a passphrase costs a second of scrypt
        self._cipher: ChaCha20Poly1305 | None = None
        self._position = 0
        self._current = 0  # index of the chunk being filled
        self._chunks: dict[int, _Chunk] = {0: _Chunk()}
        self._reservations: dict[int, int] = {}
        self._state = "open"
        self.discarded: bool | None = None

    @property
    def position(self) -> int:
        return self._position

    @property
    def prefix_length(self) -> int:
        """Bytes of the header and nonce before the first sealed chunk (0 until
        the first chunk is complete or commit())."""
        return len(self._prefix)

    @property
    def buffered(self) -> int:
        """Plaintext bytes held in memory (the open chunk and those awaiting a fill)."""
        return sum(len(c.data) for c in self._chunks.values())

    async def write(self, data: bytes) -> None:
        self._require_open()
        await self._aborting(self._append(memoryview(data).cast("B"), reserved=False))

    async def reserve(self, placeholder: bytes) -> int:
        self._require_open()
        if not placeholder:
            await self._refuse("cannot reserve zero bytes")
        offset = self._position
        self._reservations[offset] = len(placeholder)
        await self._aborting(self._append(memoryview(placeholder).cast("B"), reserved=True))
        return offset

    async def fill(self, offset: int, data: bytes) -> None:
        self._require_open()
        length = self._reservations.get(offset)
        if length is None or len(data) != length:
            await self._refuse(f"fill() at {offset} of {len(data)} bytes fits no reservation")
        del self._reservations[offset]
        await self._aborting(self._fill(offset, bytes(data)))

    async def commit(self) -> ObjectInfo:
        self._require_open()
        if self._reservations:
            await self._refuse(f"the reservation at {min(self._reservations)} was never filled")
        info = await self._aborting(self._finish())
        self._state = "committed"
        return info

    async def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self._chunks.clear()
        try:
            await self._inner.abort()
        finally:
            self.discarded = self._inner.discarded

    async def __aenter__(self) -> EncryptingWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.abort()

    # -- internals -------------------------------------------------------------

    async def _append(self, data: memoryview, *, reserved: bool) -> None:
        while data:
            chunk = self._chunks[self._current]
            if len(chunk.data) == stream.CHUNK:  # more data: the held chunk is not the last
                await self._close(self._current)
                self._current += 1
                chunk = self._chunks[self._current] = _Chunk()
            take = min(len(data), stream.CHUNK - len(chunk.data))
            chunk.data += data[:take]
            chunk.unfilled += reserved
            self._position += take
            data = data[take:]

    async def _close(self, index: int) -> None:
        """Seal a complete, non-last chunk now, or hold its place until filled."""
        cipher = await self._write_prefix()
        chunk = self._chunks[index]
        if chunk.unfilled:
            chunk.inner_offset = await self._inner.reserve(bytes(stream.SEALED))
            return
        del self._chunks[index]
        await self._inner.write(stream.seal(cipher, index, bytes(chunk.data), False))

    async def _fill(self, offset: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            index, start = divmod(offset + done, stream.CHUNK)
            take = min(len(data) - done, stream.CHUNK - start)
            chunk = self._chunks[index]
            chunk.data[start : start + take] = data[done : done + take]
            chunk.unfilled -= 1
            done += take
            if chunk.unfilled == 0 and chunk.inner_offset is not None:
                del self._chunks[index]
                sealed = stream.seal(await self._write_prefix(), index, bytes(chunk.data), False)
                await self._inner.fill(chunk.inner_offset, sealed)

    async def _finish(self) -> ObjectInfo:
        cipher = await self._write_prefix()
        chunk = self._chunks.pop(self._current)
        await self._inner.write(stream.seal(cipher, self._current, bytes(chunk.data), True))
        return await self._inner.commit()

    async def _write_prefix(self) -> ChaCha20Poly1305:
        """The payload cipher; the header and nonce go out before the first chunk.

        Made in a thread: wrapping the file key for a passphrase runs scrypt.
        """
        if self._cipher is None:
            prefix, file_key = await asyncio.to_thread(encrypt_header, self._recipients)
            key = stream.payload_key(file_key, prefix[-NONCE_SIZE:])
            await self._inner.write(prefix)
            self._prefix, self._cipher = prefix, stream.cipher(key)
        return self._cipher

    def _require_open(self) -> None:
        if self._state != "open":
            raise StorageError(f"encrypting writer is already {self._state}")

    async def _aborting(self, step: Awaitable[_T]) -> _T:
        try:
            return await step
        except BaseException:
            await self._abort_after_failure()
            raise

    async def _refuse(self, message: str) -> NoReturn:
        await self._abort_after_failure()
        raise StorageError(f"encrypting writer: {message}")

    async def _abort_after_failure(self) -> None:
        """Abort while an exception is on its way out: shielded from a second
        cancellation, and a failing cleanup is logged, never masks it."""
        cleanup = asyncio.ensure_future(self.abort())
        _cleanups.add(cleanup)
        cleanup.add_done_callback(_cleanups.discard)
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not clean up a failed encrypted write: %s", exc)
