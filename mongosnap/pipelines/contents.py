"""What the collections of one side hold, in a form two sides compare by.

A side is an archive (each collection's members fetched alone by the
manifest's ranges, checked against its count, size and SHA-256) or a live
database (one cursor per collection). Each document is hashed on its own
(SHA-256 of its raw BSON), so nothing depends on the order a server returns
documents in: a collection's digest is the SHA-256 of its documents' sorted
digests. Each document is also keyed by its ``_id`` (diff.py splits the
``_id`` space into ranges). Held in memory: about 200 bytes per document,
so meant for collections of up to a few million documents.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import Int64, json_util
from bson.binary import Binary
from bson.errors import BSONError
from bson.json_util import JSONMode, JSONOptions
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from .._errors import ArchiveError, CorruptArchive
from ..archive.bsonstream import BsonSplitter
from ..archive.manifest import COMPLETE, CollectionEntry
from ..archive.metadata import MAX_METADATA_BYTES, parse_metadata
from ..archive.reader import read_archive
from ..archive.tar import member_length
from ..catalog import ArchiveInfo
from ..codecs import get_codec
from ..source import Source
from ..storage import Storage
from .lease import LEASES
from .staging import TEMP_PREFIX

_NO_ID = object()
_INT32 = struct.Struct("<i")
_INT64 = struct.Struct("<q")
_DOUBLE = struct.Struct("<d")
IdKey = tuple[int, Any]
"""A total order over ``_id`` values: (type rank, value comparable within the rank)."""
_JSON = JSONOptions(json_mode=JSONMode.RELAXED)
_CANONICAL = JSONOptions(json_mode=JSONMode.CANONICAL)
_SKIPPED_INDEX_KEYS = frozenset({"v", "ns"})
"""Written by some servers or tools only; they say nothing about the index."""


@dataclass(frozen=True)
class Document:
    key: IdKey
    digest: bytes
    value: Any = None
    """The ``_id`` as decoded (``_NO_ID`` when the document has none)."""

    @property
    def label(self) -> str:
        """The ``_id`` as relaxed Extended JSON, for messages."""
        if self.value is _NO_ID:
            return "(no _id)"
        return json_util.dumps(self.value, json_options=_JSON)


@dataclass
class CollectionContents:
    name: str
    documents: int = 0
    bytes: int = 0
    docs: list[Document] = field(default_factory=list)
    """Sorted by ``_id`` key."""
    indexes: dict[str, str] = field(default_factory=dict)
    """Index name -> its spec as canonical Extended JSON (``v`` and ``ns`` left out)."""
    options: str = "{}"

    @property
    def digest(self) -> str:
        """SHA-256 of the documents' sorted SHA-256s: independent of their order."""
        return sorted_digest(d.digest for d in self.docs)


def sorted_digest(digests: Iterable[bytes]) -> str:
    outer = hashlib.sha256()
    for one in sorted(digests):
        outer.update(one)
    return outer.hexdigest()


def id_key(value: Any) -> IdKey:
    """Where an ``_id`` sorts: numbers by value, strings, ObjectIds by bytes, then the rest."""
    if isinstance(value, bool):
        return (6, value)
    if isinstance(value, int | float):
        return (
            (0, value) if not (isinstance(value, float) and math.isnan(value)) else (0, -math.inf)
        )
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, ObjectId):
        return (4, value.binary)
    if isinstance(value, datetime):  # BSON dates decode naive, in UTC
        return (7, (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    if isinstance(value, Binary | bytes):
        return (3, bytes(value))
    return (9, json_util.dumps(value, json_options=_CANONICAL))


def document(raw: bytes) -> Document:
    digest = hashlib.sha256(raw).digest()
    value = _first_id(raw)
    if value is _NO_ID:
        try:
            value = RawBSONDocument(raw)["_id"]
        except KeyError:
            return Document((10, ""), digest, _NO_ID)
        except BSONError:
            return Document((11, raw.hex()), digest, _NO_ID)
    return Document(id_key(value), digest, value)


def _first_id(raw: bytes) -> Any:
    """The ``_id`` read straight from the bytes when it is the first element and
    of a common fixed-layout type (decoding the whole document costs 5-10x
    more); ``_NO_ID`` otherwise."""
    if raw[5:9] != b"_id\x00" or len(raw) < 14:
        return _NO_ID
    kind = raw[4]
    if kind == 0x07 and len(raw) >= 22:
        return ObjectId(raw[9:21])
    if kind == 0x10:
        return _INT32.unpack_from(raw, 9)[0]
    if kind == 0x12 and len(raw) >= 18:
        return Int64(_INT64.unpack_from(raw, 9)[0])
    if kind == 0x01 and len(raw) >= 18:
        return _DOUBLE.unpack_from(raw, 9)[0]
    if kind == 0x02:
        size = _INT32.unpack_from(raw, 9)[0]
        text = raw[13 : 13 + size]
        if size > 0 and len(text) == size and text[-1] == 0:
            with contextlib.suppress(UnicodeDecodeError):
                return text[:-1].decode()
    return _NO_ID


def index_map(specs: Iterable[dict[str, Any]]) -> dict[str, str]:
    found = {}
    for spec in specs:
        kept = {k: v for k, v in spec.items() if k not in _SKIPPED_INDEX_KEYS}
        kept["key"] = {k: _number(v) for k, v in dict(spec.get("key") or {}).items()}
        ordered = {"key": kept.pop("key"), **dict(sorted(kept.items()))}
        found[str(spec.get("name", ""))] = json_util.dumps(ordered, json_options=_CANONICAL)
    return found


def _number(value: Any) -> Any:
    """1, 1.0 and Int64(1) are the same index direction."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) if float(value).is_integer() else float(value)
    return value


def _options(options: dict[str, Any]) -> str:
    return json_util.dumps(dict(sorted(options.items())), json_options=_CANONICAL)


class _Collector:
    """Documents fed as BSON chunks; the stream's own count, size and SHA-256 kept."""

    def __init__(self, contents: CollectionContents, splitter: BsonSplitter) -> None:
        self.contents = contents
        self.splitter = splitter
        self.stream = hashlib.sha256()

    def feed(self, chunk: bytes) -> None:
        self.stream.update(chunk)
        for raw in self.splitter.feed(chunk):
            self.contents.docs.append(document(raw))

    def close(self) -> None:
        self.splitter.close()
        self.contents.documents = self.splitter.documents
        self.contents.bytes = self.splitter.bytes
        self.contents.docs.sort(key=lambda d: d.key)


def archive_entries(info: ArchiveInfo, database: str) -> list[CollectionEntry]:
    """The archive's restorable collections of ``database`` (as restore sees them)."""
    if info.manifest is None:
        raise ArchiveError(f"{info.key} has no manifest: only complete mongosnap archives compare")
    return [
        e
        for e in info.manifest.collections
        if e.database == database
        and e.status == COMPLETE
        and e.type == "collection"
        and e.name != LEASES
    ]


async def from_archive(
    storage: Storage, info: ArchiveInfo, database: str
) -> dict[str, CollectionContents]:
    """Every collection of ``database`` in the archive, each read by its own range."""
    return {e.name: await read_entry(storage, info, e) for e in archive_entries(info, database)}


async def read_entry(
    storage: Storage, info: ArchiveInfo, entry: CollectionEntry
) -> CollectionContents:
    """One collection's members, checked against the manifest (CorruptArchive)."""
    ranges = [entry.metadata] if entry.bson is None else [entry.metadata, entry.bson]
    contents = CollectionContents(entry.name)
    splitter = BsonSplitter(max_documents=entry.documents, max_bytes=entry.bson_bytes)
    collector = _Collector(contents, splitter)
    members = read_archive(
        storage.read(info.key, ranges[0].offset, ranges[-1].end),
        codec=get_codec(info.codec),
        require_end=False,
        max_total_size=sum(member_length(r.name, r.size) for r in ranges),
    )
    async with contextlib.aclosing(members) as stream:
        async for member in stream:
            if member.name == entry.metadata.name:
                meta = parse_metadata(await member.read(MAX_METADATA_BYTES), member=member.name)
                contents.indexes = index_map(meta.indexes)
                contents.options = _options(meta.options)
            elif entry.bson is not None and member.name == entry.bson.name:
                async for chunk in member.chunks():
                    collector.feed(chunk)
            else:
                raise CorruptArchive(f"unexpected member {member.name!r} in the range")
    collector.close()
    if (
        contents.documents != entry.documents
        or contents.bytes != entry.bson_bytes
        or collector.stream.hexdigest() != entry.sha256
    ):
        raise CorruptArchive(
            f"{info.key}: {entry.database}.{entry.name} holds {contents.documents} documents, "
            f"{contents.bytes} bytes or a SHA-256 other than the manifest's"
        )
    return contents


def is_bookkeeping(name: str) -> bool:
    """mongosnap's own collections in a database it restores into: never compared."""
    return name == LEASES or name.startswith(TEMP_PREFIX)


async def from_server(
    source: Source, database: str, names: Iterable[str] | None = None
) -> dict[str, CollectionContents]:
    """Every plain collection of ``database`` (or those of ``names`` that exist), read now."""
    wanted = None if names is None else set(names)
    found = {}
    for spec in await source.collections(database):
        if spec.type != "collection" or is_bookkeeping(spec.name):
            continue
        if wanted is not None and spec.name not in wanted:
            continue
        found[spec.name] = await read_collection(source, database, spec.name, spec.options)
    return found


async def read_collection(
    source: Source, database: str, name: str, options: dict[str, Any]
) -> CollectionContents:
    contents = CollectionContents(name, options=_options(options))
    collector = _Collector(contents, BsonSplitter(validate=False))  # the server's own BSON
    async with contextlib.aclosing(source.raw_batches(database, name)) as batches:
        async for batch in batches:
            collector.feed(batch)
    collector.close()
    contents.indexes = index_map(await source.indexes(database, name))
    return contents
