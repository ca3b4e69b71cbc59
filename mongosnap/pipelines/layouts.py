"""Dump layouts other than one ``.metadata.json`` + one ``.bson`` per collection.

What a pass over an archive without a manifest learns besides the collections'
own members, and how a restore uses it (docs/format.md, "Archives mongosnap
reads"), following mongorestore's rules:

- ``system.indexes.bson`` (mongodump before 3.0): one index spec per document,
  with ``ns`` naming its collection. It is never restored as a collection. It
  gives the indexes of the collections that have no metadata file, and only
  when the database's directory holds no ``.metadata.json`` at all (otherwise
  the metadata files are the indexes' source and it is redundant).
- ``system.buckets.NAME.bson``: the buckets of time-series collection NAME,
  whose options are in ``NAME.metadata.json`` (staging.py restores them).
- a ``.metadata.json`` that does not parse fails its own collection only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bson

from .._errors import ArchiveError, UnsafeArchive
from ..archive.bsonstream import BsonSplitter
from ..archive.metadata import (
    MAX_INDEXES,
    MAX_METADATA_BYTES,
    CollectionMetadata,
    convert_legacy_index,
    parse_metadata,
)
from ..archive.reader import TarMember, member_body

SYSTEM_INDEXES = "system.indexes"
BUCKETS_PREFIX = "system.buckets."
MAX_SYSTEM_INDEXES = 64 * 1024
"""Most index specs read from one ``system.indexes.bson``."""


def collection_of(stem_name: str) -> str:
    """The collection a data member belongs to: NAME for ``system.buckets.NAME``."""
    if stem_name.startswith(BUCKETS_PREFIX) and len(stem_name) > len(BUCKETS_PREFIX):
        return stem_name[len(BUCKETS_PREFIX) :]
    return stem_name


@dataclass
class DumpLayout:
    """What one pass saw of a database's members beyond the wanted collections'."""

    metadata_files: bool = False
    """The database's directory holds at least one ``.metadata.json``."""
    system_indexes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Index specs from ``system.indexes.bson``, by collection name."""
    broken: dict[str, ArchiveError] = field(default_factory=dict)
    """Collections whose metadata file does not parse, with why."""

    def metadata(self, name: str, found: CollectionMetadata | None) -> CollectionMetadata | None:
        """The metadata a restore of ``name`` uses: its file's, else (as
        mongorestore does) its ``system.indexes`` specs when no metadata file
        exists in the database."""
        if found is not None or self.metadata_files:
            return found
        specs = self.system_indexes.get(name)
        return CollectionMetadata(name, indexes=specs) if specs else None

    async def read_system_indexes(self, member: TarMember, compressed: bool = False) -> None:
        """Group the specs of ``system.indexes.bson`` by collection, converted as
        mongorestore's --convertLegacyIndexes does (``ns`` and ``v`` dropped)."""
        splitter = BsonSplitter(max_documents=MAX_SYSTEM_INDEXES, max_bytes=MAX_METADATA_BYTES)
        if member.size > MAX_METADATA_BYTES:
            raise UnsafeArchive(
                f"{member.name} is {member.size} bytes, more than {MAX_METADATA_BYTES}"
            )
        specs: list[dict[str, Any]] = []
        async for chunk in member_body(member, compressed, MAX_METADATA_BYTES):
            specs.extend(bson.decode(raw) for raw in splitter.feed(chunk))
        splitter.close()
        for spec in specs:
            ns, key = spec.get("ns"), spec.get("key")
            if not isinstance(ns, str) or "." not in ns or not isinstance(key, dict) or not key:
                continue  # not an index spec mongorestore could use either
            name = ns.split(".", 1)[1]
            group = self.system_indexes.setdefault(name, [])
            if len(group) >= MAX_INDEXES:
                raise UnsafeArchive(f"{member.name}: more than {MAX_INDEXES} indexes for {name!r}")
            group.append(convert_legacy_index(spec))


def parse_or_broken(
    data: bytes, member: str, name: str, layout: DumpLayout
) -> CollectionMetadata | None:
    """The parsed metadata file, or None after noting why ``name`` cannot be restored."""
    try:
        return parse_metadata(data, member=member)
    except ArchiveError as exc:  # this file only: the stream itself is intact
        layout.broken[name] = exc
        return None
