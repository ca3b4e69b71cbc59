"""A new object made of new leading bytes and the tail of an existing one.

``splice(storage, key, head, source, start)`` creates ``key`` (never
overwriting) holding ``head`` followed by ``source[start:]``. On S3 the tail
is copied by the server (UploadPartCopy): only the first part, which S3
needs to be at least 5 MiB, is fetched and sent again, so rewriting the
first bytes of a large object costs a few MiB of transfer, not its size;
with no head, every part is copied by the server.
Elsewhere the tail is streamed through. Bytes only: what they mean is the
caller's business.
"""

from __future__ import annotations

from .base import ObjectInfo, Storage

MIN_PART = 5 << 20
"""S3's smallest part other than the last."""
COPY_PART = 1 << 30
"""The tail is copied in ranges of this size (S3 allows up to 5 GiB)."""


async def splice(storage: Storage, key: str, head: bytes, source: str, start: int) -> ObjectInfo:
    """Create key as ``head + source[start:]``; ObjectExists if key exists.

    A storage that splices on the server (S3: UploadPartCopy) does it itself;
    asked by its method, so this module imports no backend (no import cycle)."""
    native = getattr(storage, "splice", None)
    if native is not None:
        result: ObjectInfo = await native(key, head, source, start)
        return result
    writer = storage.open_writer(key)
    try:
        await writer.write(head)
        async for piece in storage.read(source, start):
            await writer.write(piece)
        return await writer.commit()
    except BaseException:
        await writer.abort()
        raise


def copy_ranges(start: int, size: int) -> tuple[int, list[tuple[int, int]]]:
    """(end of the fetched first part, the copied ranges [a, b)) of source[start:size]."""
    first_end = min(start + MIN_PART, size)
    ranges = []
    at = first_end
    while at < size:
        ranges.append((at, min(at + COPY_PART, size)))
        at += COPY_PART
    return first_end, ranges
