"""Split concatenated BSON documents from a stream of chunks, without decoding them.

Each document starts with its total length (int32, little-endian) and ends with
a NUL byte. Lengths are checked before anything is buffered, so a hostile
length cannot make the splitter hold more than one maximum-size document.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable

from .._errors import CorruptArchive, TruncatedArchive, UnsafeArchive

MIN_DOCUMENT = 5
MAX_DOCUMENT = 16 * 1024 * 1024 + 16 * 1024
"""The server's document limit plus the headroom it allows internally."""


class BsonSplitter:
    """Feed chunks in, get whole raw documents out."""

    def __init__(self, max_size: int = MAX_DOCUMENT) -> None:
        self.max_size = max_size
        self.documents = 0
        self.bytes = 0
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The documents completed by ``data``; raises UnsafeArchive or CorruptArchive."""
        buffer = self._buffer
        buffer += data
        docs: list[bytes] = []
        pos, end = 0, len(buffer)
        while end - pos >= 4:
            size = int.from_bytes(buffer[pos : pos + 4], "little", signed=True)
            if not MIN_DOCUMENT <= size <= self.max_size:
                raise UnsafeArchive(
                    f"BSON document {self.documents + len(docs)} declares {size} bytes"
                )
            if end - pos < size:
                break
            if buffer[pos + size - 1] != 0:
                raise CorruptArchive(f"BSON document {self.documents + len(docs)} lacks its NUL")
            docs.append(bytes(buffer[pos : pos + size]))
            pos += size
        del buffer[:pos]
        self.documents += len(docs)
        self.bytes += pos
        return docs

    def close(self) -> None:
        """Declare the end; raises TruncatedArchive if a partial document is left."""
        if self._buffer:
            raise TruncatedArchive(
                f"BSON stream ends inside document {self.documents} ({len(self._buffer)} bytes)"
            )


async def split_documents(
    chunks: AsyncIterable[bytes], *, max_size: int = MAX_DOCUMENT
) -> AsyncGenerator[bytes, None]:
    """Yield each raw document of a BSON stream (a ``.bson`` member's body)."""
    splitter = BsonSplitter(max_size)
    async for chunk in chunks:
        for doc in splitter.feed(chunk):
            yield doc
    splitter.close()
