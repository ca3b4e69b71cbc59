"""The backup pipeline: raw batches -> tar -> compression -> storage, streaming.

Ordering (docs/format.md): the archive's name is claimed first (a small
create-if-absent object, so concurrent backups never pick the same name), the
archive object is committed, its sidecar manifest stored, the claim removed.
Any failure or cancellation before the sidecar is stored aborts the upload or
removes the archive, so nothing that looks finished is left behind.

A collection dropped (or replaced) while the backup runs is recorded as
``vanished``: its members go under ``gone/`` instead of ``dump/``, so neither
mongorestore nor mongosnap ever restores it from this archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import units
from .._aio import settled, shielded
from .._errors import (
    DatabaseNotFound,
    MongosnapError,
    ObjectExists,
    ObjectNotFound,
    SourceError,
    UsageError,
)
from .._version import __version__
from ..archive import ArchiveWriter, metadata, names
from ..archive.index import build_index, index_key
from ..archive.manifest import (
    CLOCK_TOLERANCE,
    COMPLETE,
    MAX_COLLECTIONS,
    VANISHED,
    AuthMember,
    CollectionEntry,
    Manifest,
    MemberRange,
    OplogWindow,
    SourceInfo,
    archive_name,
    manifest_key,
    sealed_key,
    vanished_member_name,
)
from ..clients import MongoSource
from ..codecs import get_codec
from ..encryption import Encryption, check_recipients
from ..oplog.capture import OplogCapture
from ..progress import Progress, ProgressCallback, Stage, ignore
from ..source import CollectionSpec, Source, select
from ..storage import ObjectWriter, Retention, S3Config, Storage, opened
from . import leftovers, mirrors, ranges, sealed, users
from .locking import lock_policy, locked
from .ranges import RangedRead
from .readahead import Budget, Lane
from .throttle import TokenBucket, throttled
from .uploads import abort_stale_uploads

PREFETCH_BATCHES = 2  # batches the collection being written may hold ahead of the writer
PARALLEL = 2
"""Collections read at once by default: the one being written and 1 ahead (docs/benchmarks.md)."""
READ_AHEAD = 32 << 20
"""Bytes of read-ahead batches buffered at most, all collections ahead together."""
ESTIMATES_AT_ONCE = 8
"""collStats commands in flight at once for the progress estimates."""
CLAIM_SUFFIX = leftovers.CLAIM_SUFFIX
"""``<archive key>.claim``: the name is taken by a backup in progress (docs/format.md)."""
GROUP_COLLECTIONS = 64
"""Consecutive collections whose existence one listCollections checks, at most."""
GROUP_BYTES = 4 << 20
"""A group is checked once this many archive bytes follow its first unfilled header.

The storage holds back each upload unit that holds an unfilled header (an S3
part, 5 MiB at least; storage/_s3_writer.py): a group's headers then lie within
4 MiB plus one collection's metadata, so at most two parts wait, as the two
headers of a single collection may already (docs/format.md section 3)."""
DELETE_ATTEMPTS = 4
DELETE_BACKOFF = 0.5  # seconds, doubled after each failed attempt

if TYPE_CHECKING:
    from ..crypto.keys import Recipient
    from ..crypto.writer import EncryptingWriter

log = logging.getLogger("mongosnap.backup")


@dataclass(frozen=True)
class CollectionBackup:
    database: str
    name: str
    type: str
    documents: int
    bson_bytes: int
    sha256: str
    status: str = COMPLETE


@dataclass(frozen=True)
class BackupReport:
    """What a finished backup wrote, for callers and for ``--json``."""

    destination: str
    archive_key: str
    manifest_key: str
    codec: str
    source: str
    started: datetime
    finished: datetime
    bytes_in: int
    bytes_out: int
    collections: list[CollectionBackup] = field(default_factory=list)
    oplog: dict[str, Any] | None = None  # backup --oplog: the manifest's oplog window
    sealed_manifest_key: str | None = None
    """An encrypted archive's sealed sidecar (its manifest_key is then the clear one)."""
    stale_uploads_aborted: int = 0
    """Unfinished uploads of failed backups aborted before this one (pipelines/uploads.py)."""
    users: dict[str, int] | None = None
    """backup --users-and-roles: {"users": N, "roles": N} stored; None without it."""
    also: list[dict[str, Any]] = field(default_factory=list)
    """backup --also: each further destination, whether its copy is complete, and why not."""

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def documents(self) -> int:
        return sum(c.documents for c in self.collections)

    @property
    def encrypted(self) -> bool:
        return self.sealed_manifest_key is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["encrypted"] = self.encrypted
        out["started"] = self.started.isoformat()
        out["finished"] = self.finished.isoformat()
        out["duration"] = round(self.duration, 3)
        out["documents"] = self.documents
        return out


@dataclass
class BackupAftermath:
    """What a backup has left at its destination so far, for an interrupted run
    to say truthfully (``report``): nothing, a complete archive, or which
    leftovers (an unfinished upload, an archive without sidecar, a name claim).
    """

    where: str = ""
    archive: str | None = None
    """The archive's key, once its name is claimed."""
    claim: str | None = None
    """The name claim while it exists (or may: its removal failed)."""
    complete: bool = False
    """The archive and its sidecar are both stored: it lists as COMPLETE."""
    leftovers: list[str] = field(default_factory=list)

    def report(self) -> str:
        where = self.where.rstrip("/")
        said = (
            f"the archive {where}/{self.archive} is complete (it lists as COMPLETE)"
            if self.complete
            else ""
        )
        left = list(self.leftovers)
        if self.claim is not None:
            left.append(f"the name claim {where}/{self.claim} (prune removes it once stale)")
        if not left:
            return said or "nothing was left behind"
        return (said + "; " if said else "") + "left behind: " + "; ".join(left)


async def backup(
    source: MongoSource,
    destination: str | Storage,
    *,
    database: str | Sequence[str] | None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    codec: str = "gzip",
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
    batch_size: int = 1000,
    progress: ProgressCallback = ignore,
    oplog: bool = False,
    parallel: int = PARALLEL,
    read_ahead: int = READ_AHEAD,
    range_size: int = 0,
    aftermath: BackupAftermath | None = None,
    encryption: Encryption | None = None,
    users_and_roles: bool = False,
    read_preference: str | None = None,
    max_rate: float = 0,
    lock_for: timedelta | None = None,
    lock_mode: str = "governance",
    also: Sequence[str | Storage] = (),
) -> BackupReport:
    """Back up one, several (a list) or all (None) databases into one archive.

    ``source`` is a MongoDB URI, a ``host[:port]`` string, an AsyncMongoClient
    or a Motor client; ``destination`` is ``s3://bucket[/prefix]``, a directory
    (path or ``file://``) or a Storage. Returns what was written.

    ``oplog=True`` also stores the oplog entries written during the dump as
    ``dump/oplog.bson`` (as ``mongodump --oplog`` does); the manifest's
    ``oplog.last_ts`` is then the instant a replay of it restores to.

    ``parallel`` collections are read at once: the one being written into the
    archive and the next ``parallel - 1``, whose batches wait in at most
    ``read_ahead`` bytes of memory. The archive is the same whatever these
    are: members in the same order, each one contiguous run.

    ``range_size``: a collection of at least twice this many bytes (collStats)
    is read as ``_id`` ranges of about this size, up to ``parallel`` at once,
    its member still written in one piece (pipelines/ranges.py). 0 (default):
    never, since ranges were measured only on FerretDB, where they are 4-7x
    slower (docs/benchmarks.md). Needs ``parallel`` of 2 or more.

    ``users_and_roles``: also store each database's users and roles as
    mongodump --dumpDbUsersAndRoles does (pipelines/users.py).
    ``read_preference``: where documents are read from (source.READ_PREFERENCES).
    ``max_rate``: read at most this many bytes per second, all collections
    together (0: no cap; pipelines/throttle.py).

    ``lock_for`` locks the archive and its sidecar with S3 Object Lock for
    that long from the start (``lock_mode`` "governance" or "compliance";
    docs/operations.md, "Locked archives"); checked before anything is dumped.

    ``also``: further destinations that get the same archive from the same
    dump (pipelines/mirrors.py); one that fails is reported in ``also`` of
    the report (``complete`` False, ``error``), and the backup goes on.

    ``aftermath``, if given, is kept up to date with what the run has left at
    the destination, so a caller whose run is cancelled can say what remains.

    ``encryption`` (recipients or a passphrase) writes an age-encrypted
    archive ``….tar.gz.age`` with a sealed and a clear sidecar
    (docs/encryption.md); its keys are checked before anything is dumped.
    """
    if parallel < 1:
        raise UsageError(f"parallel must be at least 1, not {parallel}")
    if read_ahead < 0:
        raise UsageError(f"read_ahead cannot be negative ({read_ahead})")
    if range_size < 0:
        raise UsageError(f"range_size cannot be negative ({range_size})")
    bucket = TokenBucket(max_rate) if max_rate else None
    chosen_codec = get_codec(codec)
    recipients = encryption.resolved() if encryption is not None else None
    if recipients:
        await check_recipients(recipients)
    async with contextlib.AsyncExitStack() as exits, opened(destination, s3) as storage:
        await storage.check()
        policy = await lock_policy(storage, lock_for, lock_mode)
        stack = await exits.enter_async_context(contextlib.AsyncExitStack())
        extra = await mirrors.open_mirrors(stack, storage, also, s3, lock_for, lock_mode)
        async with await Source.connect(
            source, connect_timeout=connect_timeout, read_preference=read_preference
        ) as src:
            server_clock = await src.server_time()
            # Other backups' uploads idle for a day are aborted while this one
            # claims its name and dumps: its own upload is never that idle.
            cleanup = asyncio.ensure_future(
                abort_stale_uploads(storage, now=_trusted_now(server_clock))
            )
            async with _joined(cleanup):
                capture = await OplogCapture.begin(src) if oplog else None
                specs = await _plan(src, database, include, exclude)
                job = _Job(src, storage, chosen_codec, batch_size, progress)
                if progress is not ignore:  # nobody watching: no command spent on estimates
                    await job.announce(specs)
                job.server_clock = server_clock
                job.aftermath = aftermath if aftermath is not None else BackupAftermath()
                job.aftermath.where = storage.url
                job.parallel, job.read_ahead = parallel, read_ahead
                job.retention = None if policy is None else policy.retention()
                job.mirrors = extra
                job.range_size = range_size if parallel > 1 else 0
                job.recipients = recipients
                job.users_and_roles, job.bucket = users_and_roles, bucket
                if capture is not None:
                    writes = functools.partial(capture.write, include=include, exclude=exclude)
                    job.oplog_hook = writes
                report = await job.run(specs)
                report = replace(report, stale_uploads_aborted=await _cleaned(cleanup))
                return replace(report, also=[m.to_dict() for m in extra])


@contextlib.asynccontextmanager
async def _joined(task: asyncio.Future[Any]) -> AsyncGenerator[None]:
    """Wait for a background task at the end of the block, even a failed one's
    (so its work is done as before); cancel it only if the run is cancelled."""
    try:
        yield
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        await shielded(_finished(task))


async def _cleaned(cleanup: asyncio.Future[int]) -> int:
    """How many stale uploads the cleanup aborted. The archive is complete by
    now: a cleanup that failed in a way it should not is logged, never the
    backup's failure."""
    try:
        return await cleanup
    except Exception as exc:
        log.warning("the cleanup of stale uploads failed: %s: %s", type(exc).__name__, exc)
        return 0


async def _finished(task: asyncio.Future[Any]) -> None:
    await asyncio.gather(task, return_exceptions=True)  # its failure is retrieved, not raised


def _trusted_now(server: datetime | None) -> datetime:
    """The earlier of this host's clock and the server's: a clock running ahead
    would make another process's live upload look idle for as long as it is
    ahead, and have it aborted as stale."""
    local = datetime.now(UTC)
    return local if server is None else min(local, server)


async def _plan(
    src: Source,
    database: str | Sequence[str] | None,
    include: Sequence[str],
    exclude: Sequence[str],
) -> list[CollectionSpec]:
    """Every collection to dump, databases in order, or DatabaseNotFound."""
    if database is None:
        databases = await src.database_names()
    elif isinstance(database, str):
        databases = [database]
    else:
        databases = list(dict.fromkeys(database))
    if not databases:
        raise DatabaseNotFound(f"no database to back up on {src.hosts}")
    specs: list[CollectionSpec] = []
    for name in databases:
        if not name or any(c in name for c in '/\\. "$\0'):
            raise UsageError(f"not a valid database name: {name!r}")
        found = await src.collections(name, include, exclude)
        if not found and not select(await src.collection_names(name), include, exclude):
            raise DatabaseNotFound(
                f"database {name!r} does not exist or holds no collection on {src.hosts}"
                + (" matching the include/exclude patterns" if include or exclude else "")
            )
        specs.extend(found)
    if len(specs) > MAX_COLLECTIONS:
        # Refuse before dumping: a manifest this long would be refused by readers
        # (docs/format.md, limits), so the whole upload would be wasted.
        raise UsageError(
            f"{len(specs)} collections to back up, over the {MAX_COLLECTIONS} one archive holds:"
            " back up the databases separately or narrow with --include/--exclude"
        )
    return specs


class _Job:
    """One backup run: owns the archive writer and the collection results."""

    def __init__(
        self,
        src: Source,
        storage: Storage,
        codec: Any,
        batch_size: int,
        progress: ProgressCallback,
    ) -> None:
        self.src = src
        self.storage = storage
        self.codec = codec
        self.batch_size = batch_size
        self.progress = progress
        self.entries: list[CollectionEntry] = []
        # backup --oplog: appends dump/oplog.bson after the collections (oplog/capture.py)
        self.oplog_hook: Callable[..., Awaitable[OplogWindow]] | None = None
        self.oplog: OplogWindow | None = None
        self.server_time: datetime | None = None  # recorded when the clocks disagree
        self.server_clock: datetime | None = None  # the server's clock as the run began
        self.parallel = PARALLEL
        self.read_ahead = READ_AHEAD
        self.range_size = 0  # bytes per _id range of a large collection; 0: never split
        self.retention: Retention | None = None  # the archive's and sidecar's lock
        self.mirrors: list[mirrors.Mirror] = []  # backup --also: further destinations
        self.budget: Budget  # the read-ahead budget, made by _dump_all
        # The next collection's state, from the check of the group before it
        self._ahead: dict[tuple[str, str], CollectionSpec | None] = {}
        # Collections dumped whose headers wait for their group's check
        self._group: list[_Held] = []
        self._group_start = 0  # archive offset of the group's first unfilled header
        self.aftermath = BackupAftermath()
        self.estimates: dict[tuple[str, str], int | None] = {}  # documents, by namespace
        self.recipients: list[Recipient] | None = None  # encrypted to these (sealed.py)
        self.users_and_roles = False
        self.users: list[AuthMember] = []
        self.bucket: TokenBucket | None = None  # the read rate cap, shared by every reader

    async def announce(self, specs: list[CollectionSpec]) -> None:
        """Take the server's estimate of each collection's documents, a few at
        once, and send it as PLANNED: a display's totals, percentages and ETA."""
        limit = asyncio.Semaphore(ESTIMATES_AT_ONCE)

        async def estimate(spec: CollectionSpec) -> int | None:
            if not spec.has_documents:
                return 0
            async with limit:
                return await self.src.estimated_count(spec.database, spec.name)

        counts = await asyncio.gather(*(estimate(spec) for spec in specs))
        for spec, count in zip(specs, counts, strict=True):
            self.estimates[(spec.database, spec.name)] = count
            self.progress(Progress(Stage.PLANNED, spec.database, spec.name, total_documents=count))

    def _event(self, stage: Stage, spec: CollectionSpec, documents: int = 0, size: int = 0) -> None:
        total = self.estimates.get((spec.database, spec.name))
        self.progress(Progress(stage, spec.database, spec.name, documents, size, total))

    async def run(self, specs: list[CollectionSpec]) -> BackupReport:
        started = datetime.now(UTC)
        clock = time.monotonic()
        self._compare_clocks(started)
        key, claim = await self._claim(started)
        self.aftermath.archive = key
        try:
            await mirrors.claim(self.mirrors, key, claim, _claim_body(started))
            return await self._write(key, specs, started, clock)
        finally:
            await shielded(self._release(claim))
            await shielded(mirrors.release(self.mirrors))

    async def _write(
        self, key: str, specs: list[CollectionSpec], started: datetime, clock: float
    ) -> BackupReport:
        # Every destination gets the same bytes: an encrypted archive is
        # encrypted once, above the tee.
        tee = mirrors.tee(
            self.storage.open_writer(key, **locked(self.retention)), self.mirrors, key
        )
        sink: ObjectWriter = tee
        sealing = None
        if self.recipients is not None:  # the writer wraps its file key in a thread
            sealing = sealed.encrypting_writer(tee, self.recipients)
            sink = sealing[0]
        try:
            async with ArchiveWriter(sink, self.codec) as writer:
                await self._dump_all(writer, specs)
                if self.users_and_roles:
                    databases = list(dict.fromkeys(s.database for s in specs))
                    self.users = await users.write(writer, self.src, databases)
                if self.oplog_hook is not None:
                    databases = list(dict.fromkeys(s.database for s in specs))
                    self.oplog = await self.oplog_hook(writer, databases)
                finished = started + timedelta(seconds=time.monotonic() - clock)
                manifest = await self._manifest(key, started, finished)
                manifest, document = manifest.sealed(writer.plan_finish)
                await writer.finish(document)
        except BaseException:
            await shielded(sink.abort())
            mirrors.abandon(tee, self.mirrors)
            self._note_discard(sink, key)
            raise
        # Every byte is written: publishing runs to its end even when cancelled,
        # so no request is abandoned in flight (a PUT cut off on our side may
        # still land on the server after our cleanup).
        size = await settled(self._publish(sink, tee, key, document, manifest, sealing))
        report = self._result(key, manifest_key(key), started, finished, size)
        return report if sealing is None else replace(report, sealed_manifest_key=sealed_key(key))

    async def _publish(
        self,
        sink: ObjectWriter,
        tee: ObjectWriter,
        key: str,
        document: bytes,
        manifest: Manifest,
        sealing: tuple[EncryptingWriter, sealed.CiphertextTap] | None,
    ) -> int:
        """Commit the archive, then store its sidecar(s); on failure remove the archive.

        An encrypted archive's sealed sidecar is stored before its clear one,
        whose presence alone makes the archive complete (docs/encryption.md).
        """
        try:
            info = await sink.commit()
        except BaseException:
            self._note_discard(sink, key)
            raise
        sealed_document = None
        # no index for an encrypted archive: its clear sidecar names no collections
        index = build_index(manifest, document) if sealing is None else None
        try:
            if index is not None:  # before the sidecar, which makes the archive complete
                await self.storage.put(index_key(key), index, **locked(self.retention))
            if sealing is not None and self.recipients is not None:
                clear, sealed_document = await sealed.store_sealed(
                    self.storage, key, document, manifest, *sealing, info.size,
                    self.recipients, locked(self.retention),
                )  # fmt: skip
                document = clear.to_json()
            await self.storage.put(manifest_key(key), document, **locked(self.retention))
        except BaseException as exc:
            await shielded(self._withdraw(key, exc))
            await shielded(mirrors.withdraw(tee, self.mirrors, key, "the primary sidecar failed"))
            raise
        self.aftermath.complete = True
        await mirrors.publish(tee, self.mirrors, key, document, sealed_document, index)
        return info.size

    def _note_discard(self, sink: ObjectWriter, key: str) -> None:
        if sink.discarded is False:
            self.aftermath.leftovers.append(
                f"an unfinished upload of {key} (the next backup or prune aborts it"
                " once a day stale; list --uploads shows it)"
            )

    def _compare_clocks(self, started: datetime) -> None:
        """Record the server's clock when ours disagrees with it (docs/format.md,
        section 2): the name keeps our time, the manifest the server's, and
        readers order the archive by a clock they can trust."""
        server = self.server_clock
        if server is None or abs(server - started) <= CLOCK_TOLERANCE:
            return
        self.server_time = server
        log.warning(
            "this host's clock (%s) and the server's (%s) differ by more than %s:"
            " the archive's name carries this host's time, its manifest records the"
            " server's; fix the clock (NTP)",
            *(_iso_time(started), _iso_time(server), units.duration(CLOCK_TOLERANCE)),
        )

    # -- naming: claim a free name before the dump

    async def _claim(self, when: datetime) -> tuple[str, str]:
        """The archive name for this second, or the next free one, and its claim key.

        Claiming is create-if-absent (Storage.put never overwrites), so of
        several backups, in this process or others, exactly one gets a name.
        A claim is held from before the archive exists until after its sidecar
        is stored; once released the archive itself (checked here) says taken.
        """
        body = _claim_body(when)
        for _ in range(3600):
            key = archive_name(when, self.codec, encrypted=self.recipients is not None)
            claim = key + CLAIM_SUFFIX
            with contextlib.suppress(ObjectExists):
                await self._take(claim, body)
                try:
                    await self.storage.stat(key)
                except ObjectNotFound:
                    return key, claim
                except BaseException:
                    await shielded(self._release(claim))
                    raise
                await self._release(claim)
            when += timedelta(seconds=1)
        raise ObjectExists(f"{self.storage.url}: every archive name of the next hour is taken")

    async def _take(self, claim: str, body: bytes) -> None:
        """Store the claim; its put is never cut off midway (it could land after
        we looked), so a cancellation finds it either stored, then removed, or not."""

        async def put() -> None:
            await self.storage.put(claim, body)
            self.aftermath.claim = claim

        try:
            await settled(put())
        except asyncio.CancelledError:
            if self.aftermath.claim == claim:
                await shielded(self._release(claim))
            raise

    async def _release(self, claim: str) -> None:
        """Remove a claim; one left behind only costs its second's name."""
        try:
            await _delete_retrying(self.storage, claim)
        except MongosnapError as exc:
            log.warning("could not remove the name claim %s: %s", claim, exc)
            return
        self.aftermath.claim = None

    # -- an archive whose sidecar could not be stored

    async def _withdraw(self, key: str, cause: BaseException) -> None:
        """Delete an archive left without sidecar; if that fails too, say which key."""
        if self.recipients is not None:  # its sealed sidecar, if stored: an orphan for prune
            with contextlib.suppress(MongosnapError):
                await _delete_retrying(self.storage, sealed_key(key))
        else:  # its manifest index, if stored
            with contextlib.suppress(MongosnapError):
                await _delete_retrying(self.storage, index_key(key))
        try:
            await _delete_retrying(self.storage, key)
        except MongosnapError as exc:
            self.aftermath.leftovers.append(f"the archive {key} without sidecar (incomplete)")
            where = f"{self.storage.url.rstrip('/')}/{key}"
            note = (
                f"the archive {where} has no sidecar manifest and could not be deleted"
                f" ({exc}); it lists as incomplete: delete it by hand or let prune remove it"
            )
            log.error("%s", note)
            if isinstance(cause, MongosnapError):
                cause.args = (f"{cause}; {note}",)

    # -- one collection

    async def _dump_all(self, writer: ArchiveWriter, specs: list[CollectionSpec]) -> None:
        """Every collection in order, each read up to ``parallel - 1`` turns ahead.

        Readers run in one task group: the first to fail cancels the others
        and the writing, and its error is raised as it is.
        """
        readers: list[_Reader] = []
        budget = self.budget = Budget(self.read_ahead)
        budget.readers = self.parallel - 1  # cursors ahead; + the one being written: parallel
        try:
            async with asyncio.TaskGroup() as group:
                for turn in range(len(specs)):
                    while len(readers) < min(len(specs), turn + self.parallel):
                        reader = _Reader(specs[len(readers)], Lane(budget, PREFETCH_BATCHES))
                        reader.task = group.create_task(self._read(reader))
                        readers.append(reader)
                    following = specs[turn + 1] if turn + 1 < len(specs) else None
                    await self._dump(writer, readers[turn], following)
        except BaseExceptionGroup as failed:
            error = _first_error(failed)
            raise error from error.__cause__

    async def _read(self, reader: _Reader) -> None:
        """Fetch one collection's indexes, then its batches into its lane.

        A read error is the backup's failure unless the collection is gone
        (a drop kills the cursor: CursorNotFound); then the writer is told,
        through the lane, and records the collection as vanished.
        """
        spec, lane = reader.spec, reader.lane
        try:
            indexes = await self.src.indexes(spec.database, spec.name) if spec.has_documents else []
        except SourceError:
            if await self._unchanged(spec):
                raise
            reader.indexes.set_result(None)
            await lane.close()
            return
        reader.indexes.set_result(indexes)
        if not spec.has_documents:
            await lane.close()
            return
        batches = throttled(
            self.src.counted_batches(spec.database, spec.name, batch_size=self.batch_size),
            self.bucket,
        )
        try:
            await ranges.fill(lane, batches, functools.partial(self._split, reader))
        except SourceError as exc:
            if await self._unchanged(spec):
                raise
            await lane.close(exc)
            return
        if reader.ranges is not None:
            await reader.ranges.run(functools.partial(self._read_range, spec))

    async def _split(self, reader: _Reader, first_batch: int) -> bool:
        """Whether to read the collection as ``_id`` ranges instead (pipelines/ranges.py).

        Asked only once a full first batch shows the collection is not small,
        so small collections cost no extra command.
        """
        if not self.range_size or first_batch < self.batch_size:
            return False
        if not ranges.splittable(reader.spec):
            return False
        where = await ranges.plan(self.src, reader.spec, self.range_size)
        if where is None:
            return False
        log.info("%s: reading %d _id ranges", reader.spec.namespace, len(where))
        reader.ranges = RangedRead(where, self.budget, PREFETCH_BATCHES, self.parallel)
        return True

    async def _read_range(
        self, spec: CollectionSpec, where: ranges.Filter, lane: Lane[Any]
    ) -> None:
        """One ``_id`` range into its lane; errors as in ``_read``."""
        batches = throttled(
            self.src.counted_batches(
                spec.database, spec.name, batch_size=self.batch_size, filter=where
            ),
            self.bucket,
        )
        try:
            await ranges.fill(lane, batches)
        except SourceError as exc:
            if await self._unchanged(spec):
                raise
            await lane.close(exc)

    async def _dump(
        self, writer: ArchiveWriter, reader: _Reader, following: CollectionSpec | None
    ) -> None:
        """One collection's members, named under ``gone/`` if it vanished meanwhile.

        Its member headers stay unfilled until its group's check decides their
        names (docs/format.md section 3): one listCollections for up to
        GROUP_COLLECTIONS consecutive collections of one database, made after
        the last one's DONE, which also answers for the ``following``
        collection's turn. A collection whose turn comes with no group
        pending is checked at its turn as well. Its batches may have been
        read before its turn (``parallel``).
        """
        spec = reader.spec
        await reader.lane.promote()
        if not self._group and not await self._at_turn(spec):
            self.entries.append(await self._gone_early(writer, reader))
            return
        indexes = await reader.indexes
        if indexes is None:  # listIndexes failed and the collection is gone
            self.entries.append(await self._vanished_early(writer, spec))
            if self._group and self._closes_group(writer, spec, following):
                await self._check_group(writer, following)
            return
        start = writer.compressed_bytes
        meta = await writer.add_file(
            names.member_name(spec.database, spec.name, "metadata"),
            metadata.build_metadata(spec, indexes),
            hold=True,
        )
        self._event(Stage.STARTED, spec)
        data = _Data()
        if spec.has_documents:
            await writer.begin(
                names.member_name(spec.database, spec.name, "bson", collection_type=spec.type)
            )
            try:
                await self._stream(writer, reader, data)
            except SourceError as exc:  # the reader saw the collection go
                data.failure = exc
                await self._stop(reader)
            data.member = await writer.end(hold=True)
        if data.failure is None:
            self._done(spec, data)
        if not self._group:
            self._group_start = start
        self._group.append(_Held(spec, meta, data, len(self.entries)))
        self.entries.append(_entry(spec, meta, data, COMPLETE))  # until the check
        if data.failure is not None or self._closes_group(writer, spec, following):
            await self._check_group(writer, following)

    def _closes_group(
        self, writer: ArchiveWriter, spec: CollectionSpec, following: CollectionSpec | None
    ) -> bool:
        """Whether the group is checked now: full, its held bytes at their bound,
        or the last of its database."""
        return (
            len(self._group) >= GROUP_COLLECTIONS
            or writer.compressed_bytes - self._group_start >= GROUP_BYTES
            or following is None
            or following.database != spec.database
        )

    async def _check_group(self, writer: ArchiveWriter, following: CollectionSpec | None) -> None:
        """One listCollections for the group (and ``following``'s turn); settle it.

        A collection whose reader failed is the backup's failure unless the
        check finds it gone.
        """
        group, self._group = self._group, []
        database = group[0].spec.database
        ahead = following.name if following and following.database == database else None
        wanted = [held.spec.name for held in group] + ([ahead] if ahead else [])
        now = await self.src.collections_named(database, wanted)
        self._ahead.clear()
        if ahead:
            self._ahead[(database, ahead)] = now.get(ahead)
        gone = [not _same(held.spec, now.get(held.spec.name)) for held in group]
        for held, vanished in zip(group, gone, strict=True):
            if held.data.failure is not None:
                if not vanished:
                    raise held.data.failure
                self._done(held.spec, held.data)
        for held, vanished in zip(group, gone, strict=True):
            status = VANISHED if vanished else COMPLETE
            self.entries[held.slot] = await self._settle(writer, held, status)

    def _done(self, spec: CollectionSpec, data: _Data) -> None:
        self._event(Stage.DONE, spec, data.documents, data.size)

    async def _stream(self, writer: ArchiveWriter, reader: _Reader, data: _Data) -> None:
        spec = reader.spec
        async with contextlib.aclosing(_batches(reader)) as batches:
            async for batch, count in batches:
                data.digest.update(batch)
                data.documents += count
                data.size += len(batch)
                await writer.write(batch)
                self._event(Stage.BATCH, spec, data.documents, data.size)

    async def _gone_early(self, writer: ArchiveWriter, reader: _Reader) -> CollectionEntry:
        """Stop the reader of a collection gone at its turn and drop what it read."""
        await self._stop(reader)
        return await self._vanished_early(writer, reader.spec)

    async def _stop(self, reader: _Reader) -> None:
        """Stop a collection's reader (its ranges' too) and drop what they buffered."""
        reader.task.cancel()
        await asyncio.wait([reader.task])
        await reader.lane.discard()
        if reader.ranges is not None:
            await reader.ranges.discard()

    async def _unchanged(self, spec: CollectionSpec) -> bool:
        """Whether the collection still exists, and is the same one where UUIDs tell."""
        return _same(spec, await self.src.collection(spec.database, spec.name))

    async def _at_turn(self, spec: CollectionSpec) -> bool:
        """_unchanged at its turn: answered by the previous group's check if that one
        asked (it was made after everything before this turn)."""
        key = (spec.database, spec.name)
        if key in self._ahead:
            return _same(spec, self._ahead.pop(key))
        return await self._unchanged(spec)

    async def _settle(self, writer: ArchiveWriter, held: _Held, status: str) -> CollectionEntry:
        """Fill a checked collection's headers under ``dump/``, or ``gone/`` if it vanished."""
        spec, data = held.spec, held.data
        rename = vanished_member_name if status == VANISHED else str
        meta = await writer.settle(held.meta, rename(held.meta.name))
        if data.member is not None:
            data.member = await writer.settle(data.member, rename(data.member.name))
        if status == VANISHED:
            log.warning(
                "%s.%s was dropped or replaced during the backup (%d documents read):"
                " recorded as vanished, not as a snapshot",
                spec.database,
                spec.name,
                data.documents,
            )
        return _entry(spec, meta, data, status)

    async def _vanished_early(self, writer: ArchiveWriter, spec: CollectionSpec) -> CollectionEntry:
        """A collection gone at its turn: its listed metadata under ``gone/``, no data."""
        name = vanished_member_name(names.member_name(spec.database, spec.name, "metadata"))
        meta = await writer.add_file(name, metadata.build_metadata(spec, []))
        log.warning(
            "%s.%s vanished before its turn: recorded as vanished", spec.database, spec.name
        )
        self._event(Stage.DONE, spec)
        return CollectionEntry(
            database=spec.database,
            name=spec.name,
            type=spec.type,
            documents=0,
            bson_bytes=0,
            sha256=hashlib.sha256().hexdigest(),
            metadata=meta,
            bson=None,
            status=VANISHED,
        )

    async def _manifest(self, key: str, started: datetime, finished: datetime) -> Manifest:
        return Manifest(
            archive=key.rsplit("/", 1)[-1],
            codec=self.codec.name,
            tool_version=__version__,
            created=started,
            started=started,
            finished=finished,
            source=SourceInfo(self.src.hosts.split(","), await self.src.server_version()),
            databases=list(dict.fromkeys(e.database for e in self.entries)),
            collections=self.entries,
            oplog=self.oplog,
            server_time=self.server_time,
            users=self.users,
        )

    def _result(
        self, key: str, side_key: str, started: datetime, finished: datetime, size: int
    ) -> BackupReport:
        return BackupReport(
            destination=self.storage.url,
            archive_key=key,
            manifest_key=side_key,
            codec=self.codec.name,
            source=self.src.hosts,
            started=started,
            finished=finished,
            bytes_in=sum(e.bson_bytes for e in self.entries),
            bytes_out=size,
            collections=[
                CollectionBackup(
                    e.database, e.name, e.type, e.documents, e.bson_bytes, e.sha256, e.status
                )
                for e in self.entries
            ],
            oplog=None if self.oplog is None else self.oplog.to_dict(),
            users=_user_counts(self.users) if self.users_and_roles else None,
        )


@dataclass(eq=False)
class _Reader:
    """One collection being read: its lane of batches and its indexes (None: gone)."""

    spec: CollectionSpec
    lane: Lane[tuple[bytes, int]]
    indexes: asyncio.Future[list[dict[str, Any]] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    task: asyncio.Task[None] = field(init=False)
    ranges: RangedRead | None = None  # set before the lane closes when read as _id ranges


async def _batches(reader: _Reader) -> AsyncGenerator[tuple[bytes, int], None]:
    """A collection's batches in member order: its lane, then its ranges' in order."""
    while (item := await reader.lane.get()) is not None:
        yield item
    if reader.ranges is not None:
        async with contextlib.aclosing(reader.ranges.batches()) as batches:
            async for item in batches:
                yield item


@dataclass
class _Held:
    """A dumped collection waiting for its group's check, and its manifest slot."""

    spec: CollectionSpec
    meta: MemberRange
    data: _Data
    slot: int


def _entry(spec: CollectionSpec, meta: MemberRange, data: _Data, status: str) -> CollectionEntry:
    return CollectionEntry(
        database=spec.database,
        name=spec.name,
        type=spec.type,
        documents=data.documents,
        bson_bytes=data.size,
        sha256=data.digest.hexdigest(),
        metadata=meta,
        bson=data.member,
        status=status,
    )


@dataclass
class _Data:
    """What the dump of one collection's documents produced."""

    documents: int = 0
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    member: MemberRange | None = None
    failure: SourceError | None = None


def _user_counts(members: list[AuthMember]) -> dict[str, int]:
    count = {"users": 0, "roles": 0}
    for member in members:
        if member.collection == "system.users":
            count["users"] += member.documents
        elif member.collection == "system.roles":
            count["roles"] += member.documents
    return count


def _same(spec: CollectionSpec, now: CollectionSpec | None) -> bool:
    """Whether ``now`` is still the collection ``spec`` listed (by UUID where known)."""
    return now is not None and (not spec.uuid or not now.uuid or now.uuid == spec.uuid)


def _iso_time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _claim_body(when: datetime) -> bytes:
    """Who holds a name claim, for an operator who finds one left behind."""
    who = {"host": socket.gethostname(), "pid": os.getpid(), "started": when.isoformat()}
    return (json.dumps(who) + "\n").encode()


async def _delete_retrying(storage: Storage, key: str) -> None:
    """Delete with a few retries and backoff; the last error is raised."""
    delay = DELETE_BACKOFF
    for attempt in range(DELETE_ATTEMPTS):
        try:
            await storage.delete(key)
            return
        except MongosnapError as exc:
            if attempt == DELETE_ATTEMPTS - 1:
                raise
            log.info("deleting %s failed (%s); retrying in %.1fs", key, exc, delay)
            await asyncio.sleep(delay)
            delay *= 2


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error a task group stopped on (cancellations of its other tasks aside)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]


__all__ = ["BackupAftermath", "BackupReport", "CollectionBackup", "backup"]
