"""Part of an archive's manifest, read through its index (docs/format.md, section 18).

A heal of one collection from an archive of 10,000 needs one entry of a
5 MB manifest. The index says where the entries of each key range lie in the
manifest; the bytes are read from the archive's own manifest member (a
stored member: positions follow from the codec) and checked against the
index's SHA-256. The sidecar is only checked to exist, with the manifest's
size (a HEAD): its presence is what makes the archive complete.

Anything wrong with the index raises CorruptArchive; the caller then reads
the full sidecar instead, so a bad index costs the fast path only.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import CorruptArchive
from .archive.index import MAX_INDEX_BYTES, ManifestIndex, Span, checked, index_key
from .archive.manifest import Manifest, manifest_key
from .storage.base import Storage


async def partial_manifest(
    storage: Storage, key: str, size: int, codec: str, wanted: Iterable[tuple[str, str]]
) -> Manifest | None:
    """The archive's manifest listing only the ``wanted`` (database, name)
    entries, read through the index; None when one of them is in no page (an
    absence the index alone cannot prove: read the whole sidecar).

    ``size`` and ``codec`` are the archive object's, from the listing.
    CorruptArchive for an index that does not fit the archive, ObjectNotFound
    when the index or the sidecar is gone, StorageError when a read fails.
    """
    wanted = set(wanted)
    index = ManifestIndex.from_json(await storage.read_bytes(index_key(key), limit=MAX_INDEX_BYTES))
    name = key.rsplit("/", 1)[-1]
    if (index.archive, index.codec, index.compressed_bytes) != (name, codec, size):
        raise CorruptArchive("the manifest index describes another archive")
    sidecar = await storage.stat(manifest_key(key))
    if sidecar.size != index.manifest.size:
        raise CorruptArchive("the sidecar is not the size the manifest index gives")
    pages = index.pages_for(wanted)
    head = await _slice(storage, key, index, index.head, "head")
    read = [(page, await _slice(storage, key, index, page.span, "page")) for page in pages]
    tail = await _slice(storage, key, index, index.tail, "tail")
    manifest = index.assemble(head, read, tail)
    found = {(c.database, c.name) for c in manifest.collections}
    return manifest if wanted <= found else None


async def _slice(storage: Storage, key: str, index: ManifestIndex, span: Span, what: str) -> bytes:
    """The span's manifest bytes, from one ranged read of the archive's
    manifest member, checked against the index."""
    located = index.located(span)
    if not located:
        return checked(span, b"", what)
    start, end = located[0][0], located[-1][1]
    stream = storage.read(key, start, end)
    try:
        data = b"".join([chunk async for chunk in stream])
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
    if len(data) != end - start:
        raise CorruptArchive(f"the archive ended inside its manifest member ({what})")
    return checked(span, b"".join(data[a - start : b - start] for a, b in located), what)
