"""Compare two sides (an archive, or a live database), collection by collection.

Per collection: counts, sizes, indexes and options, the documents inserted,
deleted and changed (matched by ``_id``), and which ``_id`` ranges differ.
The ranges come from side A: its documents sorted by ``_id`` are cut into at
most RANGES buckets of equal count; bucket i holds the ``_id``s from its
first one up to (not including) bucket i+1's first one, the first bucket
from the lowest possible ``_id``, the last one to the highest. Side B's
documents fall into the same buckets, and a bucket differs when the SHA-256
of its sorted document digests differs (contents.py). ``_id``s sort numbers
by value, then strings, binaries, ObjectIds, booleans, dates, then the rest.
Nothing is written anywhere.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .._errors import ArchiveError, UsageError
from ..catalog import ArchiveStatus, resolve
from ..clients import MongoSource
from ..encryption import Keys
from ..source import Source
from ..storage import S3Config, Storage, opened
from . import sealed
from .contents import (
    CollectionContents,
    Document,
    IdKey,
    from_archive,
    from_server,
    sorted_digest,
)

RANGES = 64
EXAMPLES = 10
"""``_id``s named per kind of change, the lowest first; the counts are exact."""


@dataclass(frozen=True)
class IdRange:
    first: str | None
    """Side A's first ``_id`` of the range (None: from the lowest)."""
    before: str | None
    """The next range's first ``_id``, not included (None: to the highest)."""
    a_documents: int
    b_documents: int


@dataclass(frozen=True)
class CollectionDiff:
    name: str
    state: str
    """``same``, ``changed``, ``added`` (only on side B) or ``removed`` (only on side A)."""
    a_documents: int | None
    b_documents: int | None
    a_bytes: int | None
    b_bytes: int | None
    inserted: int = 0
    deleted: int = 0
    updated: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    indexes_added: list[str] = field(default_factory=list)
    indexes_removed: list[str] = field(default_factory=list)
    indexes_changed: list[str] = field(default_factory=list)
    options_changed: bool = False
    ranges: list[IdRange] = field(default_factory=list)


@dataclass(frozen=True)
class DiffReport:
    database: str
    a: str
    b: str
    same: bool
    collections: list[CollectionDiff]
    duration: float = 0.0

    @property
    def differing(self) -> list[CollectionDiff]:
        return [c for c in self.collections if c.state != "same"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    database: str,
    a_label: str,
    a: Mapping[str, CollectionContents],
    b_label: str,
    b: Mapping[str, CollectionContents],
    started: float | None = None,
) -> DiffReport:
    diffs = [compare_one(name, a.get(name), b.get(name)) for name in sorted(set(a) | set(b))]
    duration = 0.0 if started is None else round(time.monotonic() - started, 3)
    same = all(d.state == "same" for d in diffs)
    return DiffReport(database, a_label, b_label, same, diffs, duration)


def compare_one(
    name: str, a: CollectionContents | None, b: CollectionContents | None
) -> CollectionDiff:
    if a is None or b is None:
        state = "added" if a is None else "removed"
        one = b if a is None else a
        assert one is not None
        counts = (None, one.documents) if a is None else (one.documents, None)
        sizes = (None, one.bytes) if a is None else (one.bytes, None)
        return CollectionDiff(name, state, *counts, *sizes)
    by_a = {d.key: d for d in a.docs}
    by_b = {d.key: d for d in b.docs}
    inserted = sorted(by_b.keys() - by_a.keys())
    deleted = sorted(by_a.keys() - by_b.keys())
    updated = sorted(k for k in by_a.keys() & by_b.keys() if by_a[k].digest != by_b[k].digest)
    added = sorted(b.indexes.keys() - a.indexes.keys())
    removed = sorted(a.indexes.keys() - b.indexes.keys())
    changed = sorted(n for n in a.indexes.keys() & b.indexes.keys() if a.indexes[n] != b.indexes[n])
    ranges = differing_ranges(a.docs, b.docs)
    options_changed = a.options != b.options
    same = not (inserted or deleted or updated or added or removed or changed or options_changed)
    same = same and a.digest == b.digest  # duplicate _ids would hide from the maps
    return CollectionDiff(
        name,
        "same" if same else "changed",
        a.documents,
        b.documents,
        a.bytes,
        b.bytes,
        len(inserted),
        len(deleted),
        len(updated),
        {
            kind: [side[k].label for k in keys[:EXAMPLES]]
            for kind, keys, side in (
                ("inserted", inserted, by_b),
                ("deleted", deleted, by_a),
                ("updated", updated, by_a),
            )
            if keys
        },
        added,
        removed,
        changed,
        options_changed,
        ranges,
    )


def differing_ranges(a: list[Document], b: list[Document], buckets: int = RANGES) -> list[IdRange]:
    """The ``_id`` ranges (cut from side A, both sorted by key) whose documents differ."""
    step = max(1, -(-len(a) // buckets))
    starts = [a[i] for i in range(0, len(a), step)] or []
    keys: list[IdKey] = [d.key for d in starts]
    a_parts: list[list[bytes]] = [[] for _ in range(max(1, len(starts)))]
    b_parts: list[list[bytes]] = [[] for _ in range(max(1, len(starts)))]
    for side, parts in ((a, a_parts), (b, b_parts)):
        for doc in side:
            parts[max(0, bisect.bisect_right(keys, doc.key) - 1)].append(doc.digest)
    found = []
    for i, (in_a, in_b) in enumerate(zip(a_parts, b_parts, strict=True)):
        if sorted_digest(in_a) == sorted_digest(in_b):
            continue
        first = starts[i].label if i > 0 else None
        before = starts[i + 1].label if i + 1 < len(starts) else None
        found.append(IdRange(first, before, len(in_a), len(in_b)))
    return found


LIVE = "live"


async def diff(
    destination: str | Storage,
    a: str,
    b: str,
    *,
    database: str,
    source: MongoSource | None = None,
    s3: S3Config | None = None,
    connect_timeout: float = 10.0,
    keys: Keys | None = None,
) -> DiffReport:
    """Compare ``database`` on two sides: each an archive key (or ``latest``) at
    ``destination``, or ``live`` (``database`` on ``source``). Reads only.
    ``keys`` open encrypted archives (NoIdentity without them)."""
    started = time.monotonic()
    if LIVE in (a, b) and source is None:
        raise UsageError("comparing with 'live' needs the server (HOST or --uri)")
    async with opened(destination, s3) as storage:
        if source is None:
            sides = [await _archive_side(storage, ref, database, keys) for ref in (a, b)]
        else:
            async with await Source.connect(source, connect_timeout=connect_timeout) as src:
                sides = [await _side(storage, src, ref, database, keys) for ref in (a, b)]
    (a_label, a_side), (b_label, b_side) = sides
    return compare(database, a_label, a_side, b_label, b_side, started)


async def _side(
    storage: Storage, src: Source, ref: str, database: str, keys: Keys | None
) -> tuple[str, dict[str, CollectionContents]]:
    if ref == LIVE:
        return LIVE, await from_server(src, database)
    return await _archive_side(storage, ref, database, keys)


async def _archive_side(
    storage: Storage, ref: str, database: str, keys: Keys | None
) -> tuple[str, dict[str, CollectionContents]]:
    if ref == LIVE:
        raise UsageError("comparing with 'live' needs the server (HOST or --uri)")
    info = await resolve(storage, ref)
    if info.status is not ArchiveStatus.COMPLETE:
        raise ArchiveError(f"{info.key} is {info.status.value}: only complete archives compare")
    view, info = await sealed.unseal(storage, info, keys)  # a plain archive as it is
    return info.key, await from_archive(view, info, database)
