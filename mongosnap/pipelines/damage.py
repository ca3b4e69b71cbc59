"""Heal's damaged collections: still there, but emptied or shrunk since the archive.

A watched collection that exists is damaged when the newest archive with a
manifest holding its database counted documents in it and the collection
now holds none, or (with a threshold) fewer by more than that percentage of
the archived count. Counts: the manifest's ``documents``, the server's
countDocuments.

Without the oplog the only repair is ``restore_missing``: the archived
documents whose ``_id`` the collection lacks are inserted (unordered,
duplicates skipped), never replacing a live document. Documents deleted on
purpose since the archive come back too: the archive cannot tell a mistake
from a decision.

The archived member is first read to a temporary file and checked against
the manifest (count, bytes, SHA-256), so nothing from a damaged archive is
inserted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING

from .._errors import (
    ArchiveError,
    AuthenticationFailed,
    CorruptArchive,
    DecryptionFailed,
    PointInTimeUnavailable,
    ReplayError,
    ServerUnreachable,
    SourceError,
)
from ..archive.bsonstream import BsonSplitter
from ..archive.manifest import COMPLETE, CollectionEntry, Manifest
from ..catalog import ArchiveInfo, newest_archives
from ..encryption import Keys
from ..source import Source
from ..storage import Storage
from . import sealed
from .engine import Engine
from .ledger import Refill, StagingLedger

if TYPE_CHECKING:
    from .pitr import PitrPlan

log = logging.getLogger("mongosnap.heal")

BATCH = 1000
"""Archived documents checked and inserted per round trip."""
SPOOL_IN_MEMORY = 8 << 20


@dataclass(frozen=True)
class Damage:
    """One damaged collection: what the archive counted, what is live, what was done.

    ``status``: ``reported`` (nothing written), ``would restore`` (dry run),
    ``restored`` (the missing documents inserted), ``failed`` (``error`` says why).
    """

    name: str
    archive: str
    archived: int
    live: int
    reason: str
    status: str = "reported"
    inserted: int = 0
    error: str | None = None
    source: str | None = None
    """What the documents come from: ``oplog`` (the deletes since the archive
    undone, damage_oplog.py) or ``archive`` (its documents whose _id is
    absent); None when nothing is to be written."""
    fallback: str | None = None
    """With ``source`` ``archive``: why the oplog could not be used."""
    deleted: int = 0
    """``oplog``: documents deleted since the archive, each with its state before."""
    consistent_point: str | None = None
    """``oplog``: the archive's consistent point, ``SECONDS:INC``: deletes after it are undone."""
    oplog_to: str | None = None
    """``oplog``: the newest archived entry read, ``SECONDS:INC``."""

    @property
    def shrink(self) -> float:
        """Percent of the archived documents no longer there."""
        return round(100 * (self.archived - self.live) / self.archived, 2)


async def newest_manifest(
    storage: Storage, database: str, keys: Keys | None = None
) -> tuple[Storage, ArchiveInfo] | None:
    """The newest complete archive with a manifest that holds ``database``, if any,
    and the storage to read it through (an encrypted one's plaintext view).

    Without ``keys`` an encrypted archive is passed over: its manifest is sealed."""
    async with contextlib.aclosing(newest_archives(storage, database=database)) as found:
        async for info in found:
            if info.trusted and info.encrypted and keys is not None and not keys.empty:
                return await sealed.unseal(storage, info, keys)
            if info.trusted and info.manifest is not None:
                return storage, info
    return None


def entries(manifest: Manifest, database: str) -> dict[str, CollectionEntry]:
    return {
        c.name: c
        for c in manifest.collections
        if c.database == database and c.type == "collection" and c.status == COMPLETE
    }


async def live_counts(src: Source, database: str, names: list[str]) -> dict[str, int]:
    return {name: await src.count(database, name) for name in names}


def find_damage(
    info: ArchiveInfo, database: str, live: dict[str, int], threshold: float | None
) -> list[Damage]:
    """The damaged collections among those ``live`` counts, by the rule of the module doc."""
    assert info.manifest is not None
    archived = entries(info.manifest, database)
    found = []
    for name, now in live.items():
        entry = archived.get(name)
        if entry is None or entry.documents == 0:
            continue
        reason = _reason(entry.documents, now, threshold)
        if reason:
            found.append(Damage(name, info.key, entry.documents, now, reason))
    return found


def _reason(archived: int, live: int, threshold: float | None) -> str:
    if live == 0:
        return "emptied"
    if threshold is not None and (archived - live) * 100 > threshold * archived:
        return f"shrank by more than {threshold:g}%"
    return ""


async def restore_missing(engine: Engine, entry: CollectionEntry, refill: Refill) -> int:
    """Insert the archived documents of ``entry`` whose _id is absent; how many were.

    ``refill`` counts them batch by batch: an interruption says how many stay."""
    with _spool() as spool:
        await _fetch(engine, entry, spool)
        spool.seek(0)
        async for batch in _batches(spool, entry):
            refill.inserted += await engine.target.insert_absent(
                engine.to_database, entry.name, batch
            )
    return refill.inserted


async def _fetch(engine: Engine, entry: CollectionEntry, spool: IO[bytes]) -> None:
    """The member's bytes into ``spool``, checked against the manifest."""
    if entry.bson is None:
        raise CorruptArchive(f"{entry.database}.{entry.name} has no documents member")
    digest, size = hashlib.sha256(), 0
    async with contextlib.aclosing(engine.read_member(entry.bson)) as members:
        async for member in members:
            if member.name != entry.bson.name:
                raise CorruptArchive(f"unexpected member {member.name!r} in the range")
            async for chunk in member.chunks():
                size += len(chunk)
                if size > entry.bson_bytes:
                    raise CorruptArchive(f"{member.name} holds more bytes than the manifest says")
                digest.update(chunk)
                spool.write(chunk)
    if size != entry.bson_bytes or digest.hexdigest() != entry.sha256:
        raise CorruptArchive(f"{entry.bson.name} does not match its manifest entry")


async def _batches(spool: IO[bytes], entry: CollectionEntry) -> AsyncIterator[list[bytes]]:
    splitter = BsonSplitter(max_documents=entry.documents, max_bytes=entry.bson_bytes)
    pending: list[bytes] = []
    while chunk := spool.read(256 << 10):
        pending += splitter.feed(chunk)
        while len(pending) >= BATCH:
            yield pending[:BATCH]
            pending = pending[BATCH:]
    splitter.close()
    if splitter.documents != entry.documents:
        raise CorruptArchive(f"{entry.database}.{entry.name}: document count differs")
    if pending:
        yield pending


@contextlib.contextmanager
def _spool() -> Iterator[IO[bytes]]:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="mongosnap-heal-") as f:
        yield f


async def repair(
    storage: Storage,
    src: Source,
    info: ArchiveInfo,
    database: str,
    damaged: list[Damage],
    *,
    dry_run: bool,
    keys: Keys | None = None,
    ledger: StagingLedger | None = None,
) -> list[Damage]:
    """``--restore-missing`` on each damaged collection: the deletes since the
    archive undone when the archived oplog covers them, else the archive's
    missing documents put back; a failure is reported, not raised.

    ``ledger`` records how many documents each repair put back, so an
    interrupted run says what stays in the live collection."""
    from . import damage_oplog  # the oplog modules load only for a repair

    assert info.manifest is not None
    archived = entries(info.manifest, database)
    engine = Engine(storage, info, src, database)
    found = await damage_oplog.plan(storage, info, keys)
    if isinstance(found, str):
        say = log.warning if info.manifest.oplog is not None else log.info
        say("restoring missing documents from the archive, not the oplog: %s", found)
    ledger = ledger if ledger is not None else StagingLedger()
    done = []
    for damage in damaged:
        damage = _sourced(damage, found)
        if dry_run:
            done.append(replace(damage, status="would restore"))
            continue
        refill = ledger.refill(database, damage.name, damage.archived, damage.live)
        try:
            if isinstance(found, str):
                inserted = await restore_missing(engine, archived[damage.name], refill)
                damage = replace(damage, inserted=inserted)
            else:
                undone = await damage_oplog.undo_deletes(
                    engine, found, archived[damage.name], BATCH, refill
                )
                damage = replace(damage, inserted=undone.inserted, deleted=undone.deleted)
        except (
            ArchiveError, SourceError, ReplayError, PointInTimeUnavailable, DecryptionFailed
        ) as exc:  # fmt: skip
            if isinstance(exc, ServerUnreachable | AuthenticationFailed):
                raise  # the heal cannot go on: not this collection's failure
            log.warning(
                "%s: missing documents not restored from %s: %s", damage.name, damage.source, exc
            )
            done.append(replace(damage, status="failed", error=str(exc)))
            continue
        refill.complete = True
        log.info(
            "%s: %d missing documents restored from the %s (%s)",
            *(damage.name, damage.inserted, damage.source, info.key),
        )
        done.append(replace(damage, status="restored"))
    return done


def _sourced(damage: Damage, found: PitrPlan | str) -> Damage:
    if isinstance(found, str):
        return replace(damage, source="archive", fallback=found)
    return replace(
        damage, source="oplog", consistent_point=str(found.start), oplog_to=str(found.target)
    )
