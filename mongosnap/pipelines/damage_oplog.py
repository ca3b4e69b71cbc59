"""Heal's repair of a damaged collection from the archived oplog: its deletes undone.

When the archive the damage was measured against has a consistent point
(``backup --oplog``) and one span of chunks under ``oplog/`` continues from
it with no gap after it, the deletes logged for the collection since that
point are what emptied or shrank it. Each deleted document's state just
before its delete is its archived state (if any) replayed with its own
entries, as ``mongosnap undo`` computes pre-images (undo_images.Timeline);
those of the documents still absent are inserted, never replacing a live
one (Source.insert_absent). Documents inserted after the archive and then
deleted come back too, which the archive alone cannot give; updates and
inserts are not undone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .._errors import AuthenticationFailed, ServerUnreachable, SourceError
from ..archive.manifest import CollectionEntry
from ..catalog import ArchiveInfo
from ..encryption import Keys
from ..oplog import tail
from ..oplog.chunks import Coverage, read_coverage
from ..oplog.position import Ts
from ..storage import Storage
from . import pitr
from .engine import Engine
from .ledger import Refill
from .undo import archived_documents
from .undo_images import Timeline

log = logging.getLogger("mongosnap.heal")


@dataclass(frozen=True)
class Undone:
    """Deleted documents found in the oplog, and how many of them were inserted."""

    deleted: int
    inserted: int


async def plan(storage: Storage, info: ArchiveInfo, keys: Keys | None) -> pitr.PitrPlan | str:
    """The archived entries since the archive's consistent point, or why the
    oplog cannot tell the collection's deletes (the archive is used then).

    NoIdentity when the chunks are encrypted and no key given opens them."""
    start = pitr.consistent_point(info)
    if start is None:
        return f"{info.key} was not taken with backup --oplog (it has no consistent point)"
    coverage = await read_coverage(storage)
    found = await pitr.since(storage, info, coverage)
    if found is None:
        return _uncovered(coverage, start)
    gaps = [g for g in coverage.gaps if g.before > start]  # recorded inside a span too
    if gaps:
        gap = min(gaps, key=lambda g: g.after)
        return (
            f"the archived oplog has a gap since the archive's consistent point {start}: "
            f"entries after ts {gap.after} and before ts {gap.before} may be missing "
            f"({gap.reason}), and deletes with them"
        )
    return await pitr.unlock(storage, found, keys)


def _uncovered(coverage: Coverage, start: Ts) -> str:
    if not coverage.chunks:
        return "the destination holds no archived oplog (mongosnap oplog writes it under oplog/)"
    gap = next((g for g in coverage.gaps if g.after <= start < g.before), None)
    why = f": entries before ts {gap.before} may be missing ({gap.reason})" if gap else ""
    return f"no archived oplog chunk covers the archive's consistent point {start}{why}"


async def undo_deletes(
    engine: Engine, found: pitr.PitrPlan, entry: CollectionEntry, batch: int, refill: Refill
) -> Undone:
    """Insert, as they were just before, the documents of ``entry``'s collection
    deleted since the consistent point and still absent.

    ``refill`` counts them batch by batch: an interruption says how many stay."""
    database, name = entry.database, entry.name
    newest = await _server_newest(engine)  # before this repair's own inserts join the oplog
    timeline = Timeline(database, name, found.start, _after(found.start), found.target)
    async for raw in pitr.entries(engine, found):
        timeline.add(raw)
    keys = timeline.deleted()
    archived = await archived_documents(engine, entry, set(keys))
    images = [d for k in keys if (d := timeline.before_delete(k, archived.get(k))) is not None]
    for offset in range(0, len(images), batch):
        part = images[offset : offset + batch]
        refill.inserted += await engine.target.insert_absent(engine.to_database, name, part)
    if newest is not None and newest > found.target:
        log.warning(
            "%s: the archived oplog ends at ts %s, the server's at ts %s: deletes after "
            "ts %s, if any, are not archived yet and were not undone; heal again once "
            "mongosnap oplog has archived them",
            *(name, found.target, newest, found.target),
        )
    return Undone(len(images), refill.inserted)


def _after(ts: Ts) -> Ts:
    return Ts(ts.t, ts.i + 1)


async def _server_newest(engine: Engine) -> Ts | None:
    """The server's newest oplog entry, to tell deletes not archived yet; None when
    its oplog cannot be read (no oplog, no permission): then nothing is compared."""
    try:
        return await tail.bound(engine.target, newest=True)
    except (ServerUnreachable, AuthenticationFailed):
        raise
    except SourceError as exc:  # a check that informs only
        log.debug("the server's oplog not read (%s): its newest entry not compared", exc)
        return None
