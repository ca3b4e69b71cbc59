"""Shared helpers for the encryption tests."""

from __future__ import annotations

from types import TracebackType

from mongosnap.crypto import stream
from mongosnap.crypto.header import open_prefix
from mongosnap.crypto.keys import Identity
from mongosnap.storage.base import ObjectInfo


def reference(data: bytes, identities: list[Identity], plaintext: bytes) -> bytes:
    """The age file ``data`` should be: its own prefix, then plaintext sealed in one go
    under the payload key the identities recover from that prefix."""
    prefix, key = open_prefix(data, identities)
    count = stream.chunk_count(len(plaintext))
    chunks = [
        stream.seal(key, i, plaintext[i * stream.CHUNK : (i + 1) * stream.CHUNK], i == count - 1)
        for i in range(count)
    ]
    return data[:prefix] + b"".join(chunks)


class CountingWriter:
    """An ObjectWriter that keeps only its reservations: for streams too large to hold."""

    def __init__(self) -> None:
        self.position = 0
        self.reserved: dict[int, int] = {}
        self.filled = 0
        self.committed = False
        self.discarded: bool | None = None

    async def write(self, data: bytes) -> None:
        self.position += len(data)

    async def reserve(self, placeholder: bytes) -> int:
        offset = self.position
        self.reserved[offset] = len(placeholder)
        self.position += len(placeholder)
        return offset

    async def fill(self, offset: int, data: bytes) -> None:
        assert self.reserved.pop(offset) == len(data)
        self.filled += 1

    async def commit(self) -> ObjectInfo:
        assert not self.reserved
        self.committed = True
        return ObjectInfo("null", self.position)

    async def abort(self) -> None:
        self.discarded = True

    async def __aenter__(self) -> CountingWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.abort()
