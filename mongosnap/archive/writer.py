"""Streams a tar archive into an ObjectWriter as independent compressed members.

Each tar member becomes: its header, a *stored* compressed member (fixed
length), reserved as zeros and filled with the exact size once the body is
done (so each header is built once, under its final name and size); then its
body cut into ``chunk_size`` pieces, each compressed as its own member on a
thread pool, at most ``2 * workers`` pieces in flight, written in order; the
padding rides in the last piece. So every member's compressed range
[offset, end) decompresses on its own to exactly that member's tar bytes.
A caller may hold headers unfilled (``hold=True``) and name those members
later with settle(), under any name whose header has the same length.

The writer never commits or aborts the sink: on any exception (cancellation
included) it stops its workers and the caller aborts the sink.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

from .._errors import UnsafeArchive
from ..codecs import Codec
from ..storage.base import ObjectWriter
from . import tar
from .manifest import MemberRange, Totals
from .names import MANIFEST_MEMBER, validate_member_name


@dataclass
class _OpenMember:
    name: str
    offset: int
    header_length: int  # compressed length of the header member
    tar_header: int  # tar bytes of the header (a function of the name alone)
    reserved: bool  # False: the header was written whole, with the announced size
    expected: int | None
    size: int = 0


INLINE_BYTES = 64 << 10
"""A member's last piece, when it is this small, is compressed on the event
loop: handing a small piece to a worker thread and back costs more than
compressing it (a database of many small collections is mostly such pieces)."""


class ArchiveWriter:
    """Writes members one after another; see the module docstring."""

    def __init__(
        self,
        sink: ObjectWriter,
        codec: Codec,
        *,
        chunk_size: int = 1 << 20,
        workers: int = 2,
        mtime: int | None = None,
    ) -> None:
        if chunk_size < tar.BLOCK:
            raise ValueError(f"chunk_size must be at least {tar.BLOCK}")
        self._sink = sink
        self._codec = codec
        self._chunk_size = chunk_size
        self._workers = max(1, workers)
        self._in_flight = 2 * self._workers
        self._mtime = int(time.time()) if mtime is None else mtime
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[asyncio.Future[bytes]] = deque()
        self._parts: list[bytes] = []  # body bytes not yet submitted, less than a chunk
        self._buffered = 0  # their length
        self._open: _OpenMember | None = None
        self._held: dict[int, _Held] = {}  # by offset: headers not yet filled
        self._tar_bytes = 0
        self._state = "writing"  # then "finished" or "failed"

    # ------------------------------------------------------------ totals

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def tar_bytes(self) -> int:
        """Uncompressed tar bytes of the members closed so far."""
        return self._tar_bytes

    @property
    def compressed_bytes(self) -> int:
        """Bytes handed to the sink so far (all of them between members)."""
        return self._sink.position

    # ----------------------------------------------------------- members

    async def add_file(self, name: str, data: bytes, *, hold: bool = False) -> MemberRange:
        """Write a whole member whose content is at hand.

        With ``hold`` its header is reserved and left unfilled: see end().
        """
        await self._begin(name, len(data), reserve=hold)
        await self.write(data)
        return await self.end(hold=hold)

    async def begin(self, name: str) -> None:
        """Open a member of still unknown size; its header is reserved."""
        await self._begin(name, None, reserve=True)

    async def write(self, data: bytes) -> None:
        """Append body bytes to the open member (any length)."""
        member = self._need_open()
        if not data:
            return
        try:
            member.size += len(data)
            if member.expected is not None and member.size > member.expected:
                raise ValueError(f"{member.name}: more bytes than announced")
            self._parts.append(bytes(data))  # no copy of bytes: kept until joined
            self._buffered += len(data)
            if self._buffered >= self._chunk_size:
                await self._submit_chunks()
        except BaseException:
            self._fail()
            raise

    async def end(self, *, hold: bool = False) -> MemberRange:
        """Close the open member: flush, pad, and fill its header with the size.

        With ``hold`` the header stays unfilled until settle() names the member
        (the backup decides a collection's member names after its dump).
        """
        member = self._need_open()
        try:
            if member.size % tar.BLOCK:
                self._parts.append(tar.padding(member.size))
            if self._parts:
                tail = b"".join(self._parts)  # the body itself when it came in one write
                self._parts, self._buffered = [], 0
                await self._submit(tail)
            while self._pending:
                await self._flush_one()
            end = self._sink.position
            if member.expected is not None and member.size != member.expected:
                raise ValueError(f"{member.name}: fewer bytes than announced")
            if hold:  # settle() builds the header, under its final name
                self._held[member.offset] = _Held(member.name, member.header_length)
            elif member.reserved:
                stored = self._stored_header(member.name, member.size)
                if len(stored) != member.header_length:
                    raise RuntimeError(f"{member.name}: header length changed with the size")
                await self._sink.fill(member.offset, stored)
            self._tar_bytes += member.tar_header + member.size + (-member.size % tar.BLOCK)
            self._open = None
            return MemberRange(member.name, member.offset, end, member.size)
        except BaseException:
            self._fail()
            raise

    async def settle(self, member: MemberRange, name: str) -> MemberRange:
        """Fill the held header of ``member`` under ``name`` (same header length)."""
        held = self._held.pop(member.offset, None)
        if held is None:
            raise RuntimeError(f"{member.name}: no held header at {member.offset}")
        stored = self._stored_header(name, member.size)
        # begin() checked the name the member was written under
        if (name != held.name and not _canonical(name)) or len(stored) != held.header_length:
            self._fail()
            raise ValueError(f"{name!r} cannot replace {member.name!r}")
        try:
            await self._sink.fill(member.offset, stored)
        except BaseException:
            self._fail()
            raise
        return MemberRange(name, member.offset, member.end, member.size)

    # ---------------------------------------------------------- the tail

    def plan_finish(self, manifest_length: int) -> tuple[MemberRange, Totals]:
        """The manifest member's range and the archive totals finish() will produce
        for a manifest of ``manifest_length`` bytes."""
        self._need_idle()
        if self._held:
            raise RuntimeError("a member header is held: settle() it first")
        stored_length = self._codec.stored_length
        padded = manifest_length + (-manifest_length % tar.BLOCK)
        header_length = tar.header_length(MANIFEST_MEMBER)
        offset = self._sink.position
        end = offset + stored_length(header_length) + stored_length(padded)
        totals = Totals(
            tar_bytes=self._tar_bytes + header_length + padded + len(tar.END_OF_ARCHIVE),
            compressed_bytes=end + stored_length(len(tar.END_OF_ARCHIVE)),
        )
        return MemberRange(MANIFEST_MEMBER, offset, end, manifest_length), totals

    async def finish(self, manifest_json: bytes) -> MemberRange:
        """Write the manifest member (stored) and the end-of-archive member.

        Does not commit the sink. The totals match plan_finish(len(manifest_json)).
        """
        member, totals = self.plan_finish(len(manifest_json))
        try:
            await self._sink.write(self._stored_header(MANIFEST_MEMBER, len(manifest_json)))
            body = manifest_json + tar.padding(len(manifest_json))
            await self._sink.write(self._codec.stored(body))
            await self._sink.write(self._codec.stored(tar.END_OF_ARCHIVE))
            if self._sink.position != totals.compressed_bytes:
                raise RuntimeError("archive length differs from the plan")
        except BaseException:
            self._fail()
            raise
        self._tar_bytes = totals.tar_bytes
        self._state = "finished"
        self._shutdown()
        return member

    # --------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        """Stop the workers; an unfinished archive is left to the caller to abort."""
        if self._state == "writing" and (self._open is not None or self._pending):
            self._fail()
        self._shutdown()

    async def __aenter__(self) -> ArchiveWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ---------------------------------------------------------- internals

    async def _begin(self, name: str, size: int | None, *, reserve: bool) -> None:
        self._need_idle()
        if not _canonical(name):
            raise ValueError(f"not a canonical member name: {name!r}")
        try:
            tar_header = tar.header_length(name)
            if reserve:  # end() or settle() fills it; zeros until then
                length = self._codec.stored_length(tar_header)
                offset = await self._sink.reserve(bytes(length))
            else:
                stored = self._stored_header(name, size or 0)
                length, offset = len(stored), self._sink.position
                await self._sink.write(stored)
        except BaseException:
            self._fail()
            raise
        self._open = _OpenMember(name, offset, length, tar_header, reserve, size)

    def _stored_header(self, name: str, size: int) -> bytes:
        return self._codec.stored(tar.header(name, size, self._mtime))

    async def _submit_chunks(self) -> None:
        """Submit the buffered bytes' whole chunks; keep the rest."""
        joined = b"".join(self._parts)
        whole = len(joined) - len(joined) % self._chunk_size
        rest = joined[whole:]
        self._parts, self._buffered = ([rest] if rest else []), len(rest)
        with memoryview(joined) as view:
            for start in range(0, whole, self._chunk_size):
                await self._submit(bytes(view[start : start + self._chunk_size]))

    async def _submit(self, chunk: bytes) -> None:
        if len(chunk) < self._chunk_size and len(chunk) <= INLINE_BYTES:
            # a member's small last piece: compressed here, written after the pieces before it
            compressed = self._codec.compress(chunk)
            while self._pending:
                await self._flush_one()
            await self._sink.write(compressed)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="mongosnap-zip")
        loop = asyncio.get_running_loop()
        self._pending.append(loop.run_in_executor(self._pool, self._codec.compress, chunk))
        while len(self._pending) >= self._in_flight:
            await self._flush_one()

    async def _flush_one(self) -> None:
        data = await self._pending[0]
        self._pending.popleft()
        await self._sink.write(data)

    def _need_open(self) -> _OpenMember:
        if self._state != "writing" or self._open is None:
            raise RuntimeError(f"no open member (writer {self._state})")
        return self._open

    def _need_idle(self) -> None:
        if self._state != "writing" or self._open is not None:
            raise RuntimeError(f"a member is open or the writer is {self._state}")

    def _fail(self) -> None:
        self._state = "failed"
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._parts, self._buffered = [], 0
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


@dataclass
class _Held:
    name: str  # the name the member was written under (already checked)
    header_length: int  # compressed length of its reserved header


def _canonical(name: str) -> bool:
    """Whether ``name`` is a member name a reader takes as it is."""
    try:
        return validate_member_name(name) == name
    except UnsafeArchive:
        return False
