"""Shared pieces of the archive tests: a strict in-memory sink, sample BSON, builders."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid
from dataclasses import dataclass, field
from types import TracebackType

import bson
from bson import (
    Binary,
    Code,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)

from mongosnap.archive import ArchiveWriter, MemberRange
from mongosnap.codecs import Codec
from mongosnap.storage.base import ObjectInfo


class MemorySink:
    """An ObjectWriter that checks the contract: fills match reservations, commit needs all."""

    def __init__(self, delay: float = 0.0) -> None:
        self.data = bytearray()
        self.unfilled: dict[int, int] = {}
        self.delay = delay
        self.committed = False
        self.aborted = False

    @property
    def position(self) -> int:
        return len(self.data)

    async def write(self, data: bytes) -> None:
        assert not (self.committed or self.aborted)
        await asyncio.sleep(self.delay)
        self.data += data

    async def reserve(self, placeholder: bytes) -> int:
        offset = len(self.data)
        self.data += placeholder
        self.unfilled[offset] = len(placeholder)
        return offset

    async def fill(self, offset: int, data: bytes) -> None:
        assert self.unfilled.pop(offset) == len(data), "fill differs from its reservation"
        self.data[offset : offset + len(data)] = data

    async def commit(self) -> ObjectInfo:
        assert not self.unfilled, "commit with unfilled reservations"
        self.committed = True
        return ObjectInfo("memory", len(self.data))

    async def abort(self) -> None:
        self.aborted = True

    async def __aenter__(self) -> MemorySink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            await self.abort()


def many_types_documents(count: int = 50) -> list[bytes]:
    """BSON documents holding every type a dump must carry through untouched."""
    docs = []
    for i in range(count):
        doc = {
            "_id": ObjectId(),
            "n": i,
            "int64": Int64(2**40 + i),
            "decimal": Decimal128("1234567890.123456789"),
            "when": dt.datetime(2024, 2, 29, 12, 0, i % 60, 123000, tzinfo=dt.UTC),
            "binary": Binary(bytes(range(256)), 0),
            "uuid": Binary(uuid.UUID(int=i).bytes, 4),
            "regex": Regex("^a.*b$", "im"),
            "nested": {"a": [1, {"b": None, "c": [[1, 2], [3, [4]]]}], "d": {"e": {"f": "g"}}},
            "nan": math.nan,
            "negzero": -0.0,
            "inf": -math.inf,
            "min": MinKey(),
            "max": MaxKey(),
            "code": Code("function () { return 1; }"),
            "scoped": Code("x + y", {"y": 2}),
            "ts": Timestamp(1700000000, i),
            "text": "\u00e9 \u2013 \u2713 \u0000 inside",
            "bool": i % 2 == 0,
            "pad": "x" * (i * 37 % 5000),
        }
        docs.append(bson.encode(doc))
    return docs


@dataclass
class Built:
    """An archive written by ArchiveWriter, with what went in."""

    archive: bytes
    ranges: list[MemberRange]
    files: dict[str, bytes]
    manifest: bytes
    tar_bytes: int
    sink: MemorySink = field(repr=False)


async def build_archive(
    codec: Codec,
    files: list[tuple[str, list[bytes]]],
    *,
    chunk_size: int = 1 << 20,
    manifest: bytes = b'{"test": true}\n',
    whole: bool = False,
) -> Built:
    """Write ``files`` (name, body pieces) and a manifest; ``whole`` uses add_file."""
    sink = MemorySink()
    writer = ArchiveWriter(sink, codec, chunk_size=chunk_size, mtime=1_700_000_000)
    ranges = []
    for name, pieces in files:
        if whole:
            ranges.append(await writer.add_file(name, b"".join(pieces)))
            continue
        await writer.begin(name)
        for piece in pieces:
            await writer.write(piece)
        ranges.append(await writer.end())
    ranges.append(await writer.finish(manifest))
    await sink.commit()
    contents = {name: b"".join(pieces) for name, pieces in files}
    return Built(bytes(sink.data), ranges, contents, manifest, writer.tar_bytes, sink)
