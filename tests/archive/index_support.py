"""Archives of many collections, written by mongosnap's own writer into a storage.

Each collection is a one-line metadata file and a few small BSON documents;
the manifest is sealed as a backup seals it, and the sidecar (and, from
INDEX_THRESHOLD collections on, the manifest index) stored as a backup does.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import bson

from mongosnap.archive import ArchiveWriter, CollectionEntry, Manifest, archive_name
from mongosnap.archive.index import build_index, index_key
from mongosnap.archive.manifest import manifest_key
from mongosnap.archive.metadata import build_metadata
from mongosnap.codecs import get_codec
from mongosnap.storage.base import Storage

WHEN = datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)


def collection_name(i: int) -> str:
    return f"c{i:05d}"


def documents(database: str, name: str) -> bytes:
    return b"".join(bson.encode({"_id": i, "of": f"{database}.{name}"}) for i in range(3))


async def write_many(
    storage: Storage,
    count: int,
    *,
    codec: str = "gzip",
    databases: tuple[str, ...] = ("app",),
    with_index: bool = True,
) -> tuple[str, Manifest, bytes]:
    """An archive of ``count`` collections per database; its key, manifest and sidecar."""
    key = archive_name(WHEN, codec)
    entries = []
    sink = storage.open_writer(key)
    async with ArchiveWriter(sink, get_codec(codec)) as writer:
        for database in databases:
            for i in range(count):
                name = collection_name(i)
                meta = build_metadata({"name": name, "type": "collection", "options": {}})
                body = documents(database, name)
                meta_range = await writer.add_file(f"dump/{database}/{name}.metadata.json", meta)
                data_range = await writer.add_file(f"dump/{database}/{name}.bson", body)
                digest = hashlib.sha256(body).hexdigest()
                entries.append(
                    CollectionEntry(
                        database, name, "collection", 3, len(body), digest, meta_range, data_range
                    )
                )
        manifest = Manifest(
            archive=key,
            codec=codec,
            tool_version="test",
            created=WHEN,
            started=WHEN,
            finished=WHEN,
            databases=databases,
            collections=entries,
        )
        manifest, document = manifest.sealed(writer.plan_finish)
        await writer.finish(document)
    await sink.commit()
    index = build_index(manifest, document)
    if with_index and index is not None:
        await storage.put(index_key(key), index)
    await storage.put(manifest_key(key), document)
    return key, manifest, document
