"""The BSON splitter: raw documents out untouched, hostile lengths refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import bson
import pytest
from archive_support import many_types_documents

from mongosnap import CorruptArchive, TruncatedArchive, UnsafeArchive
from mongosnap.archive.bsonstream import MAX_DOCUMENT, BsonSplitter, split_documents


def split(data: bytes, step: int) -> list[bytes]:
    splitter = BsonSplitter()
    docs = []
    for i in range(0, len(data), step):
        docs += splitter.feed(data[i : i + step])
    splitter.close()
    assert splitter.documents == len(docs) and splitter.bytes == len(data)
    return docs


@pytest.mark.parametrize("step", [1, 3, 700, 4096, 1 << 20])
def test_documents_come_out_byte_for_byte(step: int) -> None:
    docs = many_types_documents(100)
    assert split(b"".join(docs), step) == docs
    assert [bson.decode(d)["n"] for d in split(b"".join(docs), step)] == list(range(100))


async def test_async_splitting() -> None:
    docs = many_types_documents(30)
    data = b"".join(docs)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    assert [d async for d in split_documents(chunks())] == docs


def test_empty_stream_and_smallest_document() -> None:
    assert split(b"", 10) == []
    assert split(b"\x05\0\0\0\0" * 3, 2) == [b"\x05\0\0\0\0"] * 3


@pytest.mark.parametrize("declared", [0, 4, -1, -(2**31), MAX_DOCUMENT + 1, 2**31 - 1])
def test_absurd_lengths_are_unsafe(declared: int) -> None:
    with pytest.raises(UnsafeArchive):
        BsonSplitter().feed(declared.to_bytes(4, "little", signed=True) + b"\0" * 10)


def test_the_largest_allowed_document_passes() -> None:
    payload = MAX_DOCUMENT - 12  # length, type, empty name, binary length, subtype, NUL
    doc = MAX_DOCUMENT.to_bytes(4, "little") + b"\x05\0" + payload.to_bytes(4, "little")
    doc += b"\0" + bytes(payload) + b"\0"
    assert len(doc) == MAX_DOCUMENT
    assert split(doc, 1 << 20) == [doc]


def test_missing_terminator_is_corrupt() -> None:
    with pytest.raises(CorruptArchive):
        BsonSplitter().feed(b"\x06\0\0\0\x0a\x01")


@pytest.mark.parametrize("tail", [b"\x05", b"\x05\0\0", b"\x10\0\0\0abc"])
def test_truncated_tail_is_reported(tail: bytes) -> None:
    splitter = BsonSplitter()
    assert splitter.feed(b"\x05\0\0\0\0" + tail) == [b"\x05\0\0\0\0"]
    with pytest.raises(TruncatedArchive):
        splitter.close()
