"""The catalog: which archives a storage holds, and how far each can be trusted.

It knows storage and the archive's names and manifests, nothing of MongoDB.
An archive is a key whose last component is an archive name
(``…YYYY-MM-DD-HH-MM-SS-mongodb-dump.tar.gz``, ``.tar.zst``, ``.tar``) or, as
the legacy scripts named them, anything ending in ``mongodb-dump.tar.gz``.
Its status (docs/format.md, sections 2 and 10):

COMPLETE    the sidecar ``<key>.manifest.json`` exists, parses, names this
            archive and its ``totals.compressed_bytes`` is the object's size
INCOMPLETE  a sidecar exists but fails one of those checks (``problem`` says
            which), or there is none but the object's tail holds a mongosnap
            manifest member: an unfinished write or a half-done deletion
LEGACY      neither sidecar nor embedded manifest: a ``tar -czf`` archive
ARCHIVED    the archive or its sidecar cannot be read now (an archive storage
            class such as Glacier or Deep Archive): never used, never deleted

How much of that is known is ``sidecar`` (SidecarState): an INCOMPLETE
archive whose sidecar could not be read, or was read but did not parse, is
of unknown state (``known`` is False): a garbled answer or a failed read says
nothing about the archive, so retention never deletes it. Access and bucket
errors are not per-archive and reach the caller as themselves.

``databases`` comes from the manifest; a legacy archive has none until
learn_databases() (or newest_archives(database=...)) streams it once through
the safe reader to see which ``dump/<db>/`` members it holds.

The time an archive's name gives is the writer's clock. A host whose clock
runs ahead (NTP broken) names its archive in the future, where it would
outrank every real archive in heal's order, retention and check's freshness.
So the name's time is checked against clocks other than the writer's: now,
and the storage's modification time (an object cannot have been named after
it was stored). Beyond CLOCK_TOLERANCE the archive is ``skewed`` and ordered
by ``dated`` (the storage's time) instead; ``when`` is the time every reader
orders by. A manifest that records the server's clock (written when the
writer's clock disagreed with it) flags a clock that ran behind too; that
archive keeps its name's place, as a copied archive would (docs/format.md,
section 2).

Every read is bounded: a sidecar by the manifest size limit, the tail by
TAIL_BYTES, and at most READ_CONCURRENCY reads run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING

from . import units
from ._errors import (
    AccessDenied,
    ArchiveError,
    BucketNotFound,
    CorruptArchive,
    NoBackupsFound,
    ObjectArchived,
    ObjectNotFound,
    StorageError,
    UsageError,
)
from .archive.clear import ClearSidecar, is_clear_sidecar
from .archive.index import INDEX_SUFFIX, index_key
from .archive.manifest import (
    CLOCK_TOLERANCE,
    ENCRYPTED_SUFFIX,
    MANIFEST_SUFFIX,
    MAX_MANIFEST_BYTES,
    Manifest,
    is_encrypted,
    manifest_key,
)
from .archive.manifest import parse_archive_name as _parse_name
from .archive.names import MANIFEST_MEMBER, parse_member_name
from .archive.reader import read_archive
from .codecs import CODECS
from .indexed import partial_manifest
from .storage.base import ObjectInfo, Storage

if TYPE_CHECKING:
    from .storage.s3 import S3Config

log = logging.getLogger("mongosnap.catalog")

LATEST = "latest"
LEGACY_SUFFIX = "mongodb-dump.tar.gz"
READ_CONCURRENCY = 8
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
"""S3 storage classes whose objects need a restore before a GET succeeds."""
TAIL_BYTES = 64 * 1024
"""How much of a sidecar-less archive's end is read to look for a manifest."""

# The manifest member is stored uncompressed near the end (docs/format.md,
# section 4): its tar header names it, its JSON opens with the format and
# closes with its own range, so at least one of these shows in the tail.
_MARKERS = (
    MANIFEST_MEMBER.encode() + b"\0",
    b'"format": "mongosnap-archive"',
    b'"name": "' + MANIFEST_MEMBER.encode() + b'"',
)
_LOOSE_TIME = re.compile(
    r"(?<!\d)(\d{4})[-_.]?(\d\d)[-_.]?(\d\d)(?:[-_.T]?(\d\d)[-_.:]?(\d\d)(?:[-_.:]?(\d\d))?)?(?!\d)"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ArchiveStatus(Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    LEGACY = "legacy"
    ARCHIVED = "archived"


class SidecarState(Enum):
    """What reading an archive's sidecar manifest showed."""

    MATCHES = "matches"
    """Read, parsed, and describes this archive: COMPLETE."""
    MISMATCH = "mismatch"
    """Read and parsed, but names another archive, codec or size: INCOMPLETE."""
    ABSENT = "absent"
    """None in the listing (or gone when read): LEGACY or INCOMPLETE."""
    UNREADABLE = "unreadable"
    """The read failed (or, without a sidecar, reading the archive's end did)."""
    UNPARSABLE = "unparsable"
    """Read, but not a valid manifest (a garbled answer looks the same)."""


_UNKNOWN = frozenset({SidecarState.UNREADABLE, SidecarState.UNPARSABLE})
_SYSTEMIC = (AccessDenied, BucketNotFound)
"""Errors that are the same for every object: they fail the whole listing."""
_PASSED_ON = (*_SYSTEMIC, ObjectArchived)
"""What classifying lets through: ObjectArchived is turned into ARCHIVED by _describe."""


@dataclass(frozen=True)
class ArchiveInfo:
    """One archive of a listing."""

    key: str
    """The storage key (relative to the storage root)."""
    size: int
    created: datetime
    """The UTC time in the name (for a legacy name without one: the object's
    modification time)."""
    codec: str
    """``gzip``, ``zstd`` or ``none``, from the suffix."""
    status: ArchiveStatus
    manifest: Manifest | None
    """The validated sidecar manifest when COMPLETE, else None."""
    problem: str = ""
    """Why the archive is INCOMPLETE or ARCHIVED."""
    modified: datetime | None = None
    """When the storage last wrote the object, if it says."""
    sidecar: SidecarState = SidecarState.ABSENT
    databases: frozenset[str] | None = None
    """The databases it holds: from the sidecar manifest (even one that does
    not match), for a legacy archive from learn_databases(); None if unknown."""
    skewed: str = ""
    """Why the time in the name is not trusted (its writer's clock was off);
    empty when it is."""
    dated: datetime | None = None
    """When a skewed name runs ahead: the time other clocks give (the
    storage's modification time, at most now), which ``when`` then is."""
    clear: ClearSidecar | None = None
    """An encrypted archive's clear sidecar when COMPLETE (``manifest`` is then
    None until a key unseals it: pipelines/sealed.py)."""
    partial: bool = False
    """``manifest`` lists only some collections: read through the manifest
    index from the archive's own manifest member (docs/format.md, section 18),
    so it is not compared with the sidecar again."""

    @property
    def encrypted(self) -> bool:
        """An age-encrypted archive (``….tar.gz.age``): reading it needs a key."""
        return is_encrypted(self.key)

    @property
    def when(self) -> datetime:
        """The time readers order by: ``created`` unless the name ran ahead."""
        return self.created if self.dated is None else self.dated

    @property
    def trusted(self) -> bool:
        """True for archives a reader may use: COMPLETE or LEGACY."""
        return self.status in (ArchiveStatus.COMPLETE, ArchiveStatus.LEGACY)

    @property
    def known(self) -> bool:
        """False when a read failed or did not parse: its state is a guess."""
        return self.sidecar not in _UNKNOWN


async def list_archives(
    destination: str | os.PathLike[str] | Storage,
    prefix: str = "",
    *,
    s3: S3Config | None = None,
) -> list[ArchiveInfo]:
    """Every archive whose key starts with ``prefix``, newest first.

    ``destination`` is a URL or path (opened and closed here, configured by
    ``s3``) or a Storage the caller keeps open.
    """
    from .storage import opened  # the S3 client is loaded only when used

    async with opened(destination, s3) as storage:
        return await _list_archives(storage, prefix)


async def _list_archives(storage: Storage, prefix: str) -> list[ArchiveInfo]:
    objects, sidecars = await _scan(storage, prefix)
    limit = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(obj: ObjectInfo) -> ArchiveInfo | None:
        async with limit:
            return await _describe(storage, obj, manifest_key(obj.key) in sidecars)

    # Errors come back as values, so a storage error reaches the caller as itself
    # (a TaskGroup would wrap it in an ExceptionGroup).
    results = await asyncio.gather(*(one(obj) for obj in objects), return_exceptions=True)
    found: list[ArchiveInfo] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        if result is not None:
            found.append(result)
    return sorted(found, key=order, reverse=True)


async def newest_archives(
    storage: Storage,
    prefix: str = "",
    *,
    database: str | None = None,
    passed: list[ArchiveInfo] | None = None,
    collections: Collection[str] | None = None,
) -> AsyncGenerator[ArchiveInfo, None]:
    """Archives newest first, each classified only when the caller gets to it.

    For readers that stop early (heal's depth, ``latest``): a bucket of years of
    nightly archives costs one listing and a few sidecar reads, not thousands.
    With ``database``, only archives that may hold it: those whose manifest
    lists it, legacy archives holding a ``dump/<database>/`` member (streamed
    until the first one, or to the end when there is none), and those whose
    databases cannot be told (a damaged archive: the caller's checks judge it).
    The others go to ``passed``, if given, with their ``databases`` known
    (what the search learned anyway: no read more).

    With ``database`` and ``collections`` (read again for each archive, so a
    caller may shrink it as it goes), an archive with a manifest index comes
    with a ``partial`` manifest listing only those collections (the entries
    of the pages holding them), read through the index; without an index, or
    when the index cannot be used, with the whole sidecar as always.
    """
    objects, sidecars = await _scan(storage, prefix)
    now = datetime.now(UTC)
    listed = sorted((_placeholder(obj, now) for obj in objects), key=order, reverse=True)
    by_key = {obj.key: obj for obj in objects}
    for placed in listed:
        obj = by_key[placed.key]
        wanted = None
        if database is not None and collections and index_key(obj.key) in sidecars:
            wanted = frozenset((database, name) for name in collections)
        info = await _describe(storage, obj, manifest_key(obj.key) in sidecars, placed, wanted)
        if info is None:
            continue
        if database is not None:
            held = await _held(storage, info, database)
            if held is not None and database not in held:
                if passed is not None:
                    passed.append(replace(info, databases=held))
                continue
        yield info


async def learn_databases(storage: Storage, archives: list[ArchiveInfo]) -> list[ArchiveInfo]:
    """The archives, each legacy one with its ``databases`` filled in.

    Each legacy archive is streamed once through the safe reader, to its end
    (a download and a decompression of the whole object; nothing is kept but
    member names), at most READ_CONCURRENCY at once. One that cannot be read
    keeps ``databases`` None and says why in ``problem``.
    """
    limit = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(info: ArchiveInfo) -> ArchiveInfo:
        if info.databases is not None or info.status is not ArchiveStatus.LEGACY:
            return info
        async with limit:
            try:
                found = await _legacy_databases(storage, info.key)
            except _SYSTEMIC:
                raise
            except (StorageError, ArchiveError) as exc:
                return replace(info, problem=f"cannot tell which databases it holds: {exc}")
        return replace(info, databases=found)

    results = await asyncio.gather(*(one(info) for info in archives), return_exceptions=True)
    for result in results:  # as in list_archives: the error itself, not a group
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, ArchiveInfo)]


async def _scan(storage: Storage, prefix: str) -> tuple[list[ObjectInfo], set[str]]:
    """One listing: the archive objects, and the keys of the sidecars and
    manifest indexes present."""
    objects: list[ObjectInfo] = []
    sidecars: set[str] = set()
    async for obj in storage.list(prefix):
        if obj.key.endswith((MANIFEST_SUFFIX, INDEX_SUFFIX)):
            sidecars.add(obj.key)
        elif archive_codec(obj.key) is not None:
            objects.append(obj)
    return objects, sidecars


async def load_manifest(storage: Storage, key: str) -> Manifest:
    """The archive's sidecar manifest, validated; CorruptArchive or ObjectNotFound."""
    return Manifest.from_json(await read_sidecar(storage, key))


async def read_sidecar(storage: Storage, key: str) -> bytes:
    """The raw bytes of the archive's sidecar (at most the manifest size limit)."""
    parts: list[bytes] = []
    total = 0
    async with _closing(storage.read(manifest_key(key))) as chunks:
        async for chunk in chunks:
            total += len(chunk)
            if total > MAX_MANIFEST_BYTES:
                raise CorruptArchive(f"sidecar manifest larger than {MAX_MANIFEST_BYTES} bytes")
            parts.append(chunk)
    return b"".join(parts)


async def resolve(storage: Storage, ref: str) -> ArchiveInfo:
    """``latest`` (the newest COMPLETE or LEGACY archive) or an exact archive key.

    Raises NoBackupsFound when ``latest`` finds nothing to use, ObjectNotFound
    for an unknown key, UsageError for a key that is not an archive name.
    """
    if ref == LATEST:
        untrusted: list[ArchiveInfo] = []
        async for info in newest_archives(storage):
            if info.trusted:
                return info
            if info.sidecar is SidecarState.UNREADABLE:  # it may be the latest: do not guess
                raise StorageError(f"cannot tell whether {info.key} is complete: {info.problem}")
            untrusted.append(info)
        if untrusted:
            raise NoBackupsFound(
                f"no complete archive in {storage.url}: {len(untrusted)} incomplete or archived"
                f" (newest: {untrusted[0].key}: {untrusted[0].problem})"
            )
        raise NoBackupsFound(f"no archive in {storage.url}")
    if archive_codec(ref) is None:
        raise UsageError(f"{ref!r} is neither an archive name nor {LATEST!r}")
    found = await _describe(storage, await storage.stat(ref), True)
    if found is None:
        raise ObjectNotFound(f"{storage.url.rstrip('/')}/{ref} does not exist")
    return found


def archive_codec(key: str) -> str | None:
    """The codec an archive key's suffix names, or None if it is not an archive."""
    base = key.rsplit("/", 1)[-1]
    if _parse_name(base) is None and not base.endswith(LEGACY_SUFFIX):
        return None
    base = base.removesuffix(ENCRYPTED_SUFFIX)
    return next(name for name, cls in CODECS.items() if base.endswith(cls.suffix))


def order(info: ArchiveInfo) -> tuple[datetime, bool, str]:
    """The sort key of every reader (reversed: newest first): ``when``; within
    one second (the names' resolution) a trusted name before a skewed one."""
    return info.when, not info.skewed, info.key


def archive_time(key: str, modified: datetime | None = None) -> datetime:
    """The time an archive's name gives; for a legacy name that does not follow
    the pattern, a date found in it, else the modification time."""
    base = key.rsplit("/", 1)[-1]
    when = _parse_name(base)
    if when is not None:
        return when
    for found in _LOOSE_TIME.finditer(base):
        year, month, day, hour, minute, second = (int(g or 0) for g in found.groups())
        with contextlib.suppress(ValueError):
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return modified.astimezone(UTC) if modified is not None else _EPOCH


# ---------------------------------------------------------------- internals


async def _describe(
    storage: Storage,
    obj: ObjectInfo,
    has_sidecar: bool,
    base: ArchiveInfo | None = None,
    wanted: frozenset[tuple[str, str]] | None = None,
) -> ArchiveInfo | None:
    """Classify one archive object; None if it vanished meanwhile. ``wanted``:
    the (database, name) pairs to read through its manifest index."""
    base = base if base is not None else _placeholder(obj, datetime.now(UTC))
    try:
        return await _classify(storage, obj, base, has_sidecar, wanted)
    except ObjectArchived as exc:
        return replace(base, status=ArchiveStatus.ARCHIVED, problem=str(exc))


async def _classify(
    storage: Storage,
    obj: ObjectInfo,
    base: ArchiveInfo,
    has_sidecar: bool,
    wanted: frozenset[tuple[str, str]] | None = None,
) -> ArchiveInfo | None:
    if obj.storage_class in ARCHIVE_CLASSES:
        try:
            await _probe(storage, obj)  # readable once restored; ObjectArchived until then
        except ObjectNotFound:
            return None
    if has_sidecar and wanted and not base.encrypted:
        judged = await _judge_index(storage, base, wanted)
        if judged is not None:
            return judged
    if has_sidecar:
        judged = await _judge_sidecar(storage, base)
        if judged is not None:
            return judged
        # deleted since the listing: judged below like any archive without one
    if base.encrypted:  # ciphertext shows no manifest; and no legacy archive is encrypted
        return _incomplete(base, "no clear sidecar: an unfinished encrypted backup")
    try:
        embedded = await _tail_has_manifest(storage, obj)
    except ObjectNotFound:
        return None
    except _PASSED_ON:
        raise
    except StorageError as exc:
        problem = f"no sidecar manifest, and the archive's end could not be read: {exc}"
        return _incomplete(base, problem, SidecarState.UNREADABLE)
    if embedded:
        return _incomplete(base, "no sidecar manifest, but the archive holds a mongosnap manifest")
    return base


async def _probe(storage: Storage, obj: ObjectInfo) -> None:
    async with _closing(storage.read(obj.key, 0, 1)) as chunks:
        async for _ in chunks:
            pass


async def _judge_index(
    storage: Storage, base: ArchiveInfo, wanted: frozenset[tuple[str, str]]
) -> ArchiveInfo | None:
    """The archive with a partial manifest read through its index; None when
    the index cannot say (the caller then reads the whole sidecar)."""
    try:
        manifest = await partial_manifest(storage, base.key, base.size, base.codec, wanted)
    except _PASSED_ON:
        raise
    except ObjectNotFound:  # the index or the sidecar went since the listing
        return None
    except (StorageError, ArchiveError) as exc:
        log.warning("%s: manifest index not used, reading the whole sidecar: %s", base.key, exc)
        return None
    if manifest is None or _mismatch(manifest, base):
        return None
    judged = replace(
        base,
        status=ArchiveStatus.COMPLETE,
        manifest=manifest,
        sidecar=SidecarState.MATCHES,
        databases=frozenset(manifest.databases),
        partial=True,
    )
    return judged if judged.skewed else _server_skew(judged, manifest.server_time)


async def _judge_sidecar(storage: Storage, base: ArchiveInfo) -> ArchiveInfo | None:
    """The archive as its sidecar shows it; None if the sidecar is gone."""
    try:
        data = await read_sidecar(storage, base.key)
        if base.encrypted or is_clear_sidecar(data):
            return _judge_clear(base, ClearSidecar.from_json(data))
        manifest = Manifest.from_json(data)
    except ObjectNotFound:
        return None
    except _PASSED_ON:
        raise
    except StorageError as exc:
        return _incomplete(
            base, f"sidecar manifest could not be read: {exc}", SidecarState.UNREADABLE
        )
    except CorruptArchive as exc:
        problem = f"sidecar manifest is unusable: {exc}"
        return _incomplete(base, problem, SidecarState.UNPARSABLE)
    databases = frozenset(manifest.databases)
    problem = _mismatch(manifest, base)
    if problem:
        return replace(_incomplete(base, problem, SidecarState.MISMATCH), databases=databases)
    judged = replace(
        base,
        status=ArchiveStatus.COMPLETE,
        manifest=manifest,
        sidecar=SidecarState.MATCHES,
        databases=databases,
    )
    return judged if judged.skewed else _server_skew(judged, manifest.server_time)


def _judge_clear(base: ArchiveInfo, clear: ClearSidecar) -> ArchiveInfo:
    """An encrypted archive as its clear sidecar shows it (docs/encryption.md)."""
    databases = frozenset(clear.databases)
    name = base.key.rsplit("/", 1)[-1]
    problem = ""
    if not base.encrypted:
        problem = "its sidecar is an encrypted archive's, but the name has no .age"
    elif clear.archive != name:
        problem = f"clear sidecar describes {clear.archive!r}, not this archive"
    elif clear.codec != base.codec:
        problem = f"clear sidecar says codec {clear.codec}, the name says {base.codec}"
    elif clear.encrypted_bytes != base.size:
        problem = f"archive is {base.size} bytes, its clear sidecar says {clear.encrypted_bytes}"
    if problem:
        return replace(_incomplete(base, problem, SidecarState.MISMATCH), databases=databases)
    judged = replace(
        base,
        status=ArchiveStatus.COMPLETE,
        sidecar=SidecarState.MATCHES,
        databases=databases,
        clear=clear,
    )
    return judged if judged.skewed else _server_skew(judged, clear.server_time)


async def _held(storage: Storage, info: ArchiveInfo, database: str) -> frozenset[str] | None:
    """The databases an archive holds, None when they cannot be told. A legacy
    archive is read until its first member of ``database``: the set is then
    partial, but holds ``database``; without one, it is complete."""
    if info.databases is not None or info.status is not ArchiveStatus.LEGACY:
        return info.databases
    try:
        return await _legacy_databases(storage, info.key, stop_at=database)
    except _SYSTEMIC:
        raise
    except (StorageError, ArchiveError):
        return None


async def _legacy_databases(
    storage: Storage, key: str, stop_at: str | None = None
) -> frozenset[str]:
    """The databases of the ``dump/<db>/`` members of an archive, read to its end
    (or to the first member of ``stop_at``). Bodies are skipped, never kept."""
    found: set[str] = set()
    async with (
        _closing(storage.read(key)) as chunks,
        contextlib.aclosing(read_archive(chunks)) as members,
    ):
        async for member in members:
            dump = parse_member_name(member.name)
            if dump is not None:
                found.add(dump.database)
                if dump.database == stop_at:
                    break
    return frozenset(found)


def _mismatch(manifest: Manifest, info: ArchiveInfo) -> str:
    name = info.key.rsplit("/", 1)[-1]
    if manifest.archive != name:
        return f"sidecar manifest describes {manifest.archive!r}, not this archive"
    if manifest.codec != info.codec:
        return f"sidecar manifest says codec {manifest.codec}, the name says {info.codec}"
    if manifest.totals.compressed_bytes != info.size:
        return (
            f"archive is {info.size} bytes, its sidecar manifest says"
            f" {manifest.totals.compressed_bytes}"
        )
    return ""


async def _tail_has_manifest(storage: Storage, obj: ObjectInfo) -> bool:
    start = max(0, obj.size - TAIL_BYTES)
    parts: list[bytes] = []
    async with _closing(storage.read(obj.key, start, start + TAIL_BYTES)) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
    tail = b"".join(parts)[-TAIL_BYTES:]
    return any(marker in tail for marker in _MARKERS)


def _placeholder(obj: ObjectInfo, now: datetime) -> ArchiveInfo:
    """What the listing alone says of an archive: enough to order it."""
    codec = archive_codec(obj.key)
    assert codec is not None
    info = ArchiveInfo(
        key=obj.key,
        size=obj.size,
        created=archive_time(obj.key, obj.modified),
        codec=codec,
        status=ArchiveStatus.LEGACY,
        manifest=None,
        modified=obj.modified,
    )
    return _check_clock(info, now)


def _check_clock(info: ArchiveInfo, now: datetime) -> ArchiveInfo:
    """Flag a name dated after now, or after the storage wrote the object,
    beyond CLOCK_TOLERANCE, and date it by the earlier of those instead."""
    witnesses = [(now, "now")]
    if info.modified is not None:
        witnesses.append((info.modified.astimezone(UTC), "the storage's clock, which wrote it"))
    dated, clock = min(witnesses, key=lambda w: w[0])
    dated = dated.replace(microsecond=0)  # the resolution of the names it is ordered among
    ahead = info.created - dated
    if ahead <= CLOCK_TOLERANCE:
        return info
    skewed = (
        f"the writer's clock ran ahead: named {units.duration(ahead)} after {clock}"
        f" ({_utc(dated)}); ordered by that time"
    )
    return replace(info, skewed=skewed, dated=dated)


def _server_skew(info: ArchiveInfo, server: datetime | None) -> ArchiveInfo:
    """What a manifest's record of the server's clock says of the name's time.

    Ahead: dated by the server's clock (this reorders only readers that sort
    after classifying; the storage's clock has usually caught it before).
    Behind: flagged, ordered by its name, so it looks older than it is: the
    safe side for freshness, and retention keeps the newer-named archives."""
    if server is None or abs(info.created - server) <= CLOCK_TOLERANCE:
        return info
    if info.created > server:
        skewed = (
            f"the writer's clock ran ahead: named {units.duration(info.created - server)} after the"
            f" server's clock ({_utc(server)}); ordered by that time"
        )
        return replace(info, skewed=skewed, dated=server.replace(microsecond=0))
    skewed = (
        f"the writer's clock ran behind: named {units.duration(server - info.created)} before the"
        f" server's clock ({_utc(server)}); ordered by its name"
    )
    return replace(info, skewed=skewed)


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _incomplete(
    info: ArchiveInfo, problem: str, sidecar: SidecarState = SidecarState.ABSENT
) -> ArchiveInfo:
    return replace(info, status=ArchiveStatus.INCOMPLETE, problem=problem, sidecar=sidecar)


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """Close a storage read stream even when its reader stops early."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


__all__ = [
    "CLOCK_TOLERANCE",
    "LATEST",
    "ArchiveInfo",
    "ArchiveStatus",
    "SidecarState",
    "archive_codec",
    "archive_time",
    "learn_databases",
    "list_archives",
    "load_manifest",
    "newest_archives",
    "order",
    "read_sidecar",
    "resolve",
]
