"""DecryptedView: a Storage whose reads return the plaintext of age files.

A read of plaintext [start, end) costs one ranged read of the inner storage:
the whole sealed chunks that hold the range (stream.cipher_span), each
authenticated before any of its bytes is yielded. The header is read once
per key (a ranged read of its first KiB, longer if the header is) and the
payload key kept, so ranged heal stays ranged. Which chunk is the last comes
from the object's size: a truncated object's new last chunk fails to
authenticate with the last flag, so it can never yield a short plaintext.

Only reads decrypt: ``list`` shows the stored (ciphertext) sizes, and
``put``/``open_writer`` store what they are given (wrap a writer in an
EncryptingWriter to encrypt). Objects are immutable, so the cached header of
a key stays right; one deleted and written anew fails to authenticate.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .._errors import DecryptionFailed, StorageError
from ..storage.base import ObjectInfo, ObjectWriter, Storage, UploadInfo
from . import stream
from .header import IncompleteHeader, open_prefix
from .keys import Identity

HEADER_PROBE = 4096
"""The first read of an object: enough for a header of a dozen recipients."""
MAX_HEADER = 1 << 20
CACHED_HEADERS = 256


@dataclass(frozen=True)
class OpenedObject:
    """What reading an object's plaintext needs, from its header and size."""

    prefix_length: int
    size: int
    """The plaintext's size."""
    stored_size: int
    cipher: ChaCha20Poly1305

    def __repr__(self) -> str:
        return f"OpenedObject(prefix_length={self.prefix_length}, size={self.size})"

    @property
    def last_index(self) -> int:
        return stream.chunk_count(self.size) - 1


class DecryptedView:
    def __init__(self, inner: Storage, identities: Sequence[Identity]) -> None:
        self.inner = inner
        self._identities = list(identities)
        # Opening tasks by key: concurrent readers of one object share one
        # header read (and one scrypt run); a failed open is forgotten.
        self._opened: OrderedDict[str, asyncio.Task[OpenedObject]] = OrderedDict()

    @property
    def url(self) -> str:
        return self.inner.url

    async def header(self, key: str) -> OpenedObject:
        """Read, authenticate and cache the header of key.

        Raises ObjectNotFound, NoIdentity or DecryptionFailed.
        """
        task = self._opened.get(key)
        if task is None:
            task = self._opened[key] = asyncio.ensure_future(self._open(key))
            task.add_done_callback(lambda done: self._forget_failed(key, done))
            if len(self._opened) > CACHED_HEADERS:
                self._opened.popitem(last=False)
        self._opened.move_to_end(key)
        return await asyncio.shield(task)  # one reader cancelled does not cancel the others

    def _forget_failed(self, key: str, task: asyncio.Task[OpenedObject]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._opened.get(key) is task:
            del self._opened[key]

    async def _open(self, key: str) -> OpenedObject:
        stored = (await self.inner.stat(key)).size
        probe = HEADER_PROBE
        while True:
            data = await self._fetch(key, 0, min(probe, stored))
            try:  # in a thread: a passphrase costs scrypt's second of CPU
                prefix, payload_key = await asyncio.to_thread(open_prefix, data, self._identities)
                break
            except IncompleteHeader:
                if len(data) >= stored or probe >= MAX_HEADER:
                    raise DecryptionFailed(f"{key}: the age header is truncated") from None
                probe *= 4
        size = stream.payload_size(stored, prefix)
        return OpenedObject(prefix, size, stored, ChaCha20Poly1305(payload_key))

    async def _fetch(self, key: str, start: int, end: int) -> bytes:
        return b"".join([piece async for piece in self.inner.read(key, start, end)])

    async def stat(self, key: str) -> ObjectInfo:
        """The object's info with its plaintext size."""
        info = await self.inner.stat(key)
        opened = await self.header(key)
        return ObjectInfo(info.key, opened.size, info.modified, info.storage_class)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Plaintext [start, end), clipped to the plaintext's size, in chunks of 64 KiB."""
        opened = await self.header(key)
        end = opened.size if end is None else min(end, opened.size)
        start = min(max(start, 0), end)
        if opened.size == 0:  # nothing to yield, but the empty chunk must authenticate
            end = 1
        if start >= end:
            return
        cstart, cend, index = stream.cipher_span(opened.prefix_length, start, end)
        cend = min(cend, opened.stored_size)
        wanted = (end - 1) // stream.CHUNK + 1  # the index after the range's last chunk
        pending = b""  # less than a sealed chunk, carried to the next piece
        async for piece in self.inner.read(key, cstart, cend):
            data = memoryview(pending + piece if pending else piece)
            at = 0
            while len(data) - at >= stream.SEALED and index < wanted:
                yield self._slice(opened, index, data[at : at + stream.SEALED], start, end)
                at += stream.SEALED
                index += 1
            pending = bytes(data[at:])
        if pending and index < wanted:
            yield self._slice(opened, index, pending, start, end)
            pending, index = b"", index + 1
        if index != wanted or pending:
            raise DecryptionFailed(f"{key}: the encrypted object changed or ends early")

    def _slice(
        self, opened: OpenedObject, index: int, sealed: bytes | memoryview, start: int, end: int
    ) -> bytes:
        """The part of plaintext [start, end) that chunk ``index`` holds, authenticated."""
        plain = stream.open_chunk(opened.cipher, index, sealed, index == opened.last_index)
        base = index * stream.CHUNK
        if start <= base and base + len(plain) <= end:
            return plain
        return plain[max(start - base, 0) : end - base]

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        opened = await self.header(key)
        if opened.size > limit:
            raise StorageError(
                f"{self.url}/{key} holds {opened.size} bytes, over the {limit} limit"
            )
        return b"".join([piece async for piece in self.read(key)])

    # -- delegated -------------------------------------------------------------

    async def check(self) -> None:
        await self.inner.check()

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix)

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        return await self.inner.put(key, data)

    def open_writer(self, key: str) -> ObjectWriter:
        return self.inner.open_writer(key)

    async def delete(self, key: str) -> None:
        self._opened.pop(key, None)
        await self.inner.delete(key)

    def uploads(self, prefix: str = "") -> AsyncIterator[UploadInfo]:
        return self.inner.uploads(prefix)

    async def abort_upload(self, upload: UploadInfo) -> None:
        await self.inner.abort_upload(upload)

    async def aclose(self) -> None:
        await self.inner.aclose()
