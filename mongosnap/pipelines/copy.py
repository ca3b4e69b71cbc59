"""A second copy: complete archives (and oplog chunks) from one destination to another.

Each archive is written at the target as a backup writes it (docs/format.md,
section 2): the archive object first, with a no-clobber commit, then checked
there (its size is the manifest's ``totals.compressed_bytes``, and the
manifest member inside it, read back with one ranged read, is byte-identical
to the sidecar), and only then its sidecar. A copy cut off at any point
leaves at most an archive without sidecar (listed as incomplete, never
trusted) or an aborted upload; nothing that looks complete.

Rerunning resumes: an archive whose key, size and sidecar bytes already match
at the target is skipped; one whose archive arrived but whose sidecar did not
is checked as above and completed with its sidecar. An object already at the
target under the same key with other contents is never overwritten: the
archive is reported as a conflict and the run fails at the end (ObjectExists).

Bytes are streamed from source to target, one archive at a time: memory is
the target writer's buffers (S3: a few parts). When source and target are S3
on the same endpoint with the same configuration (credentials included), the
server copies each object itself (UploadPartCopy parts in a multipart upload,
so no size limit), and no byte passes through this process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .._errors import (
    CorruptArchive,
    MongosnapError,
    NoBackupsFound,
    ObjectExists,
    ObjectNotFound,
    UsageError,
)
from ..archive.index import build_index, index_key
from ..archive.manifest import Manifest, manifest_key, sealed_key
from ..archive.reader import read_archive
from ..archive.tar import member_length
from ..catalog import ArchiveInfo, ArchiveStatus, list_archives, order, read_sidecar
from ..codecs import get_codec
from ..oplog.chunks import PREFIX as OPLOG_PREFIX
from ..oplog.chunks import read_coverage, sidecar_key
from ..storage import S3Config, Storage, opened
from . import sealed
from .locking import LockPolicy, lock_policy, locked

log = logging.getLogger("mongosnap.copy")

COPIED, SKIPPED, COMPLETED, CONFLICT = "copied", "skipped", "completed", "conflict"


@dataclass(frozen=True)
class CopiedArchive:
    """One archive: ``copied``, ``skipped`` (already at the target), ``completed``
    (its archive was there, its sidecar was written now) or ``conflict``."""

    key: str
    size: int
    outcome: str
    problem: str = ""


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    started: datetime
    finished: datetime
    archives: list[CopiedArchive] = field(default_factory=list)
    oplog_copied: list[str] = field(default_factory=list)
    """Oplog chunk objects (with their sidecars) and gap records copied."""
    oplog_skipped: int = 0
    bytes_copied: int = 0
    """Bytes that passed through this process (a server-side copy counts none)."""
    server_side: int = 0
    """Objects the S3 server copied itself (source and target on one endpoint)."""

    @property
    def copied(self) -> list[CopiedArchive]:
        return [a for a in self.archives if a.outcome in (COPIED, COMPLETED)]

    @property
    def skipped(self) -> list[CopiedArchive]:
        return [a for a in self.archives if a.outcome == SKIPPED]

    @property
    def conflicts(self) -> list[CopiedArchive]:
        return [a for a in self.archives if a.outcome == CONFLICT]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "copied": len(self.copied),
            "skipped": len(self.skipped),
            "conflicts": len(self.conflicts),
            "bytes_copied": self.bytes_copied,
            "server_side": self.server_side,
            "archives": [
                {"key": a.key, "size": a.size, "outcome": a.outcome, "problem": a.problem or None}
                for a in self.archives
            ],
            "oplog_copied": self.oplog_copied,
            "oplog_skipped": self.oplog_skipped,
        }


async def copy(
    source: str | Storage,
    target: str | Storage,
    *,
    select: str | datetime = "latest",
    with_oplog: bool = False,
    s3: S3Config | None = None,
    target_s3: S3Config | None = None,
    lock_for: timedelta | None = None,
    lock_mode: str = "governance",
) -> CopyReport:
    """Copy complete archives from ``source`` to ``target``; return what was done.

    ``select``: "latest" (the newest complete archive), "all", or an aware
    datetime (every complete archive created at or after it). ``with_oplog``
    also copies the complete oplog chunks and gap records under ``oplog/``.
    ``s3`` configures the source's S3 access, ``target_s3`` the target's
    (None: the same as ``s3``). ``lock_for``/``lock_mode`` lock what is
    written at the target, as for backup.

    Raises NoBackupsFound when nothing matches, ObjectExists when an object
    under the same key at the target has other contents (nothing is
    overwritten; every other archive is still copied first).
    """
    _check_select(select)
    started = datetime.now(UTC)
    async with opened(source, s3) as src, opened(target, target_s3 or s3) as dst:
        if src.url == dst.url:
            raise UsageError(f"source and target are the same destination ({src.url})")
        await dst.check()
        policy = await lock_policy(dst, lock_for, lock_mode)
        job = _Copy(src, dst, policy)
        for info in _selected(await list_archives(src), select):
            job.results.append(await job.archive(info))
        if with_oplog:
            await job.oplog()
        report = CopyReport(
            src.url,
            dst.url,
            started,
            datetime.now(UTC),
            job.results,
            job.oplog_copied,
            job.oplog_skipped,
            job.bytes,
            job.server_side,
        )
    if report.conflicts:
        names = ", ".join(f"{a.key} ({a.problem})" for a in report.conflicts)
        raise ObjectExists(f"not copied, the target holds other contents: {names}")
    return report


def _check_select(select: str | datetime) -> None:
    if isinstance(select, datetime):
        if select.tzinfo is None:
            raise UsageError("copy's since time needs a time zone (2026-12-01T00:00:00Z)")
    elif select not in ("latest", "all"):
        raise UsageError(f"select is 'latest', 'all' or a datetime, not {select!r}")


def _selected(archives: list[ArchiveInfo], select: str | datetime) -> list[ArchiveInfo]:
    """The complete archives asked for, oldest first; NoBackupsFound if none."""
    complete = sorted((a for a in archives if a.status is ArchiveStatus.COMPLETE), key=order)
    if select == "latest":
        chosen = complete[-1:]
    elif select == "all":
        chosen = complete
    else:
        assert isinstance(select, datetime)
        chosen = [a for a in complete if a.when >= select]
    if not chosen:
        raise NoBackupsFound("no complete archive to copy matches")
    return chosen


class _Copy:
    def __init__(self, src: Storage, dst: Storage, policy: LockPolicy | None) -> None:
        self.src = src
        self.dst = dst
        self.policy = policy
        self.results: list[CopiedArchive] = []
        self.oplog_copied: list[str] = []
        self.oplog_skipped = 0
        self.bytes = 0
        self.server_side = 0  # objects copied by the S3 server itself

    def _lock(self) -> dict[str, Any]:
        return locked(None if self.policy is None else self.policy.retention())

    # -- archives

    async def archive(self, info: ArchiveInfo) -> CopiedArchive:
        if info.encrypted:
            return await self.encrypted(info)
        key = info.key
        sidecar = await read_sidecar(self.src, key)
        manifest = Manifest.from_json(sidecar)
        there = await _stat(self.dst, key)
        if there is None:
            await self._stream(key, info.size)
            outcome = COPIED
        elif there.size != info.size:
            return CopiedArchive(key, info.size, CONFLICT, f"{there.size} bytes at the target")
        else:
            outcome = COMPLETED
        problem = await self._check(key, manifest, sidecar)
        if problem:
            if outcome == COPIED:  # ours, just written: never leave it to look like a copy
                with contextlib.suppress(MongosnapError):
                    await self.dst.delete(key)
                raise CorruptArchive(f"{self.dst.url}/{key}: {problem} after the copy")
            return CopiedArchive(key, info.size, CONFLICT, problem)
        index = build_index(manifest, sidecar)
        if index is not None:  # before the sidecar (docs/format.md, section 18)
            await self._put_once(index_key(key), index)  # other bytes there: readers check them
        match = await self._sidecar(key, sidecar)
        if not match:
            return CopiedArchive(key, info.size, CONFLICT, "another sidecar at the target")
        if outcome == COMPLETED and match == "present":
            return CopiedArchive(key, info.size, SKIPPED)
        log.info("copied %s (%d bytes)", key, info.size)
        return CopiedArchive(key, info.size, outcome)

    async def encrypted(self, info: ArchiveInfo) -> CopiedArchive:
        """An encrypted archive, copied with no key: checked at the target by
        its size and ciphertext SHA-256 (the clear sidecar's); then its sealed
        sidecar, then its clear one, last (docs/encryption.md). One whose
        clear sidecar is at the target already was checked before it was
        written there: skipped without reading the object again."""
        key = info.key
        clear = await read_sidecar(self.src, key)
        there = await _stat(self.dst, key)
        if there is not None and there.size != info.size:
            return CopiedArchive(key, info.size, CONFLICT, f"{there.size} bytes at the target")
        if there is not None:
            with contextlib.suppress(ObjectNotFound):
                if await read_sidecar(self.dst, key) == clear:
                    return CopiedArchive(key, info.size, SKIPPED)
        if there is None:
            await self._stream(key, info.size)
        _, problems = await sealed.check_ciphertext(self.dst, info)
        if problems:
            if there is None:  # ours, just written: never leave it to look like a copy
                with contextlib.suppress(MongosnapError):
                    await self.dst.delete(key)
                raise CorruptArchive(f"{self.dst.url}/{key}: {problems[0]} after the copy")
            return CopiedArchive(key, info.size, CONFLICT, str(problems[0]))
        sealed_document = await self.src.read_bytes(sealed_key(key), limit=sealed.MAX_SEALED_BYTES)
        sealed_match = await self._put_once(sealed_key(key), sealed_document)
        match = await self._sidecar(key, clear) if sealed_match else ""
        if not match:
            return CopiedArchive(key, info.size, CONFLICT, "another sidecar at the target")
        if there is not None and match == "present":
            return CopiedArchive(key, info.size, SKIPPED)
        log.info("copied %s (%d bytes)", key, info.size)
        return CopiedArchive(key, info.size, COPIED if there is None else COMPLETED)

    async def _put_once(self, key: str, data: bytes) -> str:
        """ "written", "present" (the same bytes were there) or "" (other bytes)."""
        try:
            await self.dst.put(key, data, **self._lock())
            return "written"
        except ObjectExists:
            there = await self.dst.read_bytes(key, limit=len(data) + 1)
            return "present" if there == data else ""

    async def _stream(self, key: str, size: int) -> None:
        """The object, source to target, committed without overwriting:
        server-side when both are S3 on one endpoint with one configuration."""
        shares = getattr(self.dst, "shares_endpoint", None)
        if shares is not None and shares(self.src):
            await self.dst.copy_in(self.src, key, size, **self._lock())  # type: ignore[attr-defined]
            self.server_side += 1
            return
        async with self.dst.open_writer(key, **self._lock()) as writer:
            async for chunk in _read(self.src, key):
                await writer.write(chunk)
            if writer.position != size:
                raise CorruptArchive(f"{self.src.url}/{key} changed while it was copied")
            await writer.commit()
        self.bytes += size

    async def _check(self, key: str, manifest: Manifest, sidecar: bytes) -> str:
        """Why the target's archive is not the one the sidecar describes ("" if it is)."""
        info = await self.dst.stat(key)
        if info.size != manifest.totals.compressed_bytes:
            return f"{info.size} bytes where the manifest says {manifest.totals.compressed_bytes}"
        member = manifest.manifest
        stream = _read(self.dst, key, member.offset, member.end)
        found: list[tuple[str, bytes]] = []
        async with contextlib.aclosing(
            read_archive(
                stream,
                codec=get_codec(manifest.codec),
                require_end=False,
                max_total_size=member_length(member.name, member.size),
            )
        ) as members:
            async for tar_member in members:
                found.append((tar_member.name, await tar_member.read(member.size)))
        if found != [(member.name, sidecar)]:
            return "its embedded manifest differs from the sidecar"
        return ""

    async def _sidecar(self, key: str, sidecar: bytes) -> str:
        """Store the sidecar last: "written", "present" (the same bytes were
        there already) or "" (other bytes are there)."""
        try:
            await self.dst.put(manifest_key(key), sidecar, **self._lock())
            return "written"
        except ObjectExists:
            there = await read_sidecar(self.dst, key)
            return "present" if there == sidecar else ""

    # -- oplog chunks

    async def oplog(self) -> None:
        """Complete chunks (object, then sidecar) and gap records, skipping what
        the target holds already; never overwriting."""
        coverage = await read_coverage(self.src)
        for chunk in coverage.chunks:
            await self._small_or_streamed(chunk.object_key, sidecar_key(chunk.object_key))
        for gap in coverage.gaps:
            if gap.key:
                await self._small_or_streamed(gap.key, None)

    async def _small_or_streamed(self, key: str, side: str | None) -> None:
        done = side if side is not None else key
        if await _stat(self.dst, done) is not None:
            self.oplog_skipped += 1
            return
        if await _stat(self.dst, key) is None:
            size = (await self.src.stat(key)).size
            await self._stream(key, size)
        if side is not None:
            data = b"".join([c async for c in _read(self.src, side)])
            await self.dst.put(side, data, **self._lock())
        self.oplog_copied.append(key.removeprefix(OPLOG_PREFIX))


async def _stat(storage: Storage, key: str) -> Any:
    try:
        return await storage.stat(key)
    except ObjectNotFound:
        return None


async def _read(
    storage: Storage, key: str, start: int = 0, end: int | None = None
) -> AsyncIterator[bytes]:
    """A storage read, closed even when its reader stops early."""
    stream = storage.read(key, start, end)
    try:
        async for chunk in stream:
            yield chunk
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


__all__ = ["CopiedArchive", "CopyReport", "copy"]
