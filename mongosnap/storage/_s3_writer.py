"""The S3 streaming writer: a multipart upload fed part by part.

Part sizes (``part_size``): parts 1-1000 have the configured size, and each
further block of 1000 parts doubles it, capped at 5 GiB. With the default
8 MiB the ten blocks give 8 MiB x 1000 x (1 + 2 + ... + 512), about 7.8 TiB,
beyond S3's 5 TiB object limit; with the minimum 5 MiB the ceiling is about
4.9 TiB (``object_size_ceiling``). Memory in use: the parts in flight (at most
max_concurrency, and at most max_in_flight bytes unless one part alone is
larger), the part being filled, and any part held back by a reservation.
With the defaults that stays under 200 MiB until parts reach 64 MiB, i.e.
for archives up to about 56 GiB compressed (parts 1-1000 at 8 MiB, then 16,
32); past that, about three parts.

Parts are cut from the stream as soon as they are full. A part that overlaps
an unfilled reservation stays in memory until fill() completes it; the others
upload at once as background tasks. The multipart upload is created with the
first part that uploads; an object shorter than one part goes up with a single
PutObject at commit.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any

from .._errors import StorageError
from ._s3_body import PartBody
from ._s3_client import ABORT_RETRY_DELAYS, S3Client
from ._s3_config import MAX_PART_SIZE, MIN_PART_SIZE
from ._writer import BaseWriter
from .base import ObjectInfo, Retention

__all__ = [
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "S3Writer",
    "content_md5",
    "object_size_ceiling",
    "part_size",
]

MAX_PARTS = 10_000
PARTS_PER_STEP = 1000

log = logging.getLogger(__name__)


def part_size(number: int, base: int) -> int:
    """Size of part ``number`` (from 1) when the first part is ``base`` bytes."""
    return min(base << ((number - 1) // PARTS_PER_STEP), MAX_PART_SIZE)


def object_size_ceiling(base: int) -> int:
    """The largest object MAX_PARTS parts of the schedule can hold."""
    steps = MAX_PARTS // PARTS_PER_STEP
    return sum(PARTS_PER_STEP * part_size(1 + step * PARTS_PER_STEP, base) for step in range(steps))


def content_md5(data: bytes | bytearray) -> str:
    """The Content-MD5 header S3 requires on every write of a locked object."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class S3Writer(BaseWriter):
    def __init__(self, s3: S3Client, key: str, retention: Retention | None = None) -> None:
        super().__init__(key)
        self._s3 = s3
        self._retention = retention
        self._name = s3.name(key)
        self._base = s3.config.part_size
        self._concurrency = s3.config.max_concurrency
        self._max_in_flight = s3.config.max_in_flight
        self._in_flight = 0  # bytes of the parts in self._running
        # The part being filled: allocated at its full size and handed to the
        # client as it is once full (the only copy of a byte is into it).
        self._part = bytearray()
        self._filled = 0  # bytes of self._part written so far
        self._part_start = 0  # object offset of the part's first byte
        self._next_part = 1
        self._held: dict[int, tuple[int, bytearray]] = {}  # number: (offset, bytes)
        self._running: set[asyncio.Task[dict[str, Any]]] = set()
        self._uploaded: dict[int, dict[str, Any]] = {}
        self._create: asyncio.Future[str] | None = None
        self._upload_id: str | None = None

    # -- BaseWriter steps ------------------------------------------------------

    async def _append(self, offset: int, data: bytes) -> None:
        self._reap()
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                if not self._part:
                    self._part = self._new_part()
                taken = min(len(self._part) - self._filled, len(view) - done)
                self._part[self._filled : self._filled + taken] = view[done : done + taken]
                self._filled += taken
                done += taken
                if self._filled == len(self._part):
                    await self._cut()

    async def _fill(self, offset: int, data: bytes) -> None:
        self._reap()
        end = offset + len(data)
        blocks = [(start, len(block), block) for start, block in self._held.values()]
        blocks.append((self._part_start, self._filled, self._part))
        for start, length, block in blocks:
            lo, hi = max(offset, start), min(end, start + length)
            if lo < hi:
                block[lo - start : hi - start] = data[lo - offset : hi - offset]
        for number in sorted(self._held):
            start, block = self._held[number]
            if not self._reserved(start, start + len(block)):
                del self._held[number]
                await self._launch(number, block)

    async def _commit(self) -> ObjectInfo:
        self._reap()
        if self._next_part == 1:
            return await self._put_whole()
        return await self._complete()

    async def _put_whole(self) -> ObjectInfo:
        """An object shorter than one part: one PutObject."""
        body = self._take_part()
        client = await self._s3.client()
        args = {**self._s3.object_args(self.key, self._retention), **self._md5(body)}
        await self._s3.create_new(
            self.key, lambda **cond: client.put_object(**args, Body=body, **cond)
        )
        await self._locked()
        return ObjectInfo(self.key, len(body))

    def _md5(self, data: bytes | bytearray) -> dict[str, Any]:
        return {} if self._retention is None else {"ContentMD5": content_md5(data)}

    async def _locked(self) -> None:
        """Make sure a committed object carries its lock (docs: "Locked archives")."""
        if self._retention is not None:
            await self._s3.ensure_locked(self.key, self._retention)

    async def _complete(self) -> ObjectInfo:
        """Upload the last part, wait for every part, complete the upload."""
        if self._filled:
            await self._cut()
        while self._running:
            await asyncio.wait(self._running, return_when=asyncio.FIRST_EXCEPTION)
            self._reap()
        parts = [self._uploaded.get(n) for n in range(1, self._next_part)]
        if self._held or None in parts or self._upload_id is None:
            raise StorageError(f"{self._s3.where(self.key)}: a part was never uploaded")
        client = await self._s3.client()
        request: dict[str, Any] = {
            "Bucket": self._s3.bucket,
            "Key": self._name,
            "UploadId": self._upload_id,
            "MultipartUpload": {"Parts": parts},
        }
        await self._s3.create_new(
            self.key, lambda **cond: client.complete_multipart_upload(**request, **cond)
        )
        self._upload_id = None
        await self._locked()
        return ObjectInfo(self.key, self.position)

    async def _discard(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()
        self._held.clear()
        self._part, self._filled = bytearray(), 0
        upload_id = self._upload_id
        if upload_id is None and self._create is not None:
            (created,) = await asyncio.gather(self._create, return_exceptions=True)
            upload_id = created if isinstance(created, str) else None
        self._upload_id = self._create = None
        if upload_id is not None:
            await self._s3.abort(self.key, upload_id, retry_delays=ABORT_RETRY_DELAYS)

    # -- parts -------------------------------------------------------------------

    def _new_part(self) -> bytearray:
        """The next part's buffer, at its full size (zeros until written)."""
        if self._next_part > MAX_PARTS:
            raise StorageError(
                f"{self._s3.where(self.key)} outgrows S3's {MAX_PARTS} parts"
                f" ({object_size_ceiling(self._base)} bytes with part_size {self._base})"
            )
        return PartBody(part_size(self._next_part, self._base))

    def _take_part(self) -> bytearray:
        """The part being filled, cut to what was written; a new one starts."""
        part = self._part
        del part[self._filled :]  # only a last part is short; nothing views it yet
        self._part_start += self._filled
        self._part, self._filled = bytearray(), 0
        return part

    async def _cut(self) -> None:
        """Hand the part being filled over: upload it, or hold it back while it
        overlaps an unfilled reservation. The buffer itself goes to the
        client, uncopied (_s3_body.py; a bytes Body would be wrapped in a
        BytesIO that aiohttp copies and reads in 64 KiB pieces)."""
        number, start = self._next_part, self._part_start
        part = self._take_part()
        self._next_part += 1
        if self._reserved(start, start + len(part)):
            self._held[number] = (start, part)
        else:
            await self._launch(number, part)

    def _reserved(self, start: int, end: int) -> bool:
        """Whether [start, end) overlaps an unfilled reservation."""
        return any(o < end and start < o + n for o, n in self._reservations.items())

    async def _launch(self, number: int, data: bytearray) -> None:
        """Start uploading a part; first wait for room (count and bytes in flight)."""
        while self._running and (
            len(self._running) >= self._concurrency
            or self._in_flight + len(data) > self._max_in_flight
        ):
            await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            self._reap()
        upload_id = await self._ensure_upload()
        task = asyncio.create_task(self._upload_part(upload_id, number, data))
        self._in_flight += len(data)
        task.add_done_callback(lambda _: self._release(len(data)))
        self._running.add(task)

    def _release(self, size: int) -> None:
        self._in_flight -= size

    def _reap(self) -> None:
        """Collect finished part uploads; raise the first failure."""
        for task in [t for t in self._running if t.done()]:
            self._running.discard(task)
            part = task.result()
            self._uploaded[part["PartNumber"]] = part

    async def _ensure_upload(self) -> str:
        if self._upload_id is None:
            if self._create is None:
                # Shielded: if the caller is cancelled while the request is in
                # flight, the id still arrives and _discard can abort it.
                self._create = asyncio.ensure_future(self._create_upload())
            self._upload_id = await asyncio.shield(self._create)
        return self._upload_id

    async def _create_upload(self) -> str:
        client = await self._s3.client()
        args = {**self._s3.object_args(self.key, self._retention), **self._s3.checksum_args()}
        with self._s3.translating(self.key):
            created = await client.create_multipart_upload(**args)
        return created["UploadId"]

    async def _upload_part(self, upload_id: str, number: int, data: bytearray) -> dict[str, Any]:
        client = await self._s3.client()
        with self._s3.translating(self.key):
            response = await client.upload_part(
                Bucket=self._s3.bucket,
                Key=self._name,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                **self._s3.checksum_args(),
                **self._md5(data),
            )
        part: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        log.debug("uploaded part %d of %s (%d bytes)", number, self.key, len(data))
        if self._s3.sends_checksums() and "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part
