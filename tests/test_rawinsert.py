"""Raw inserts: the archive's bytes sent as one document sequence, against FerretDB.

What goes out must equal what PyMongo would send, what arrives must equal the
bytes given, and failures must look exactly as ``bulk_write``'s did.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from helpers import sample_document, server_documents
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient, MongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.compression_support import ZlibContext
from pymongo.errors import BulkWriteError
from pymongo.hello import Hello
from pymongo.message import _op_msg

from mongosnap import _rawinsert
from mongosnap._errors import SourceError
from mongosnap.source import DUPLICATE_KEY, Source, error_code


def _documents(count: int, start: int = 0) -> list[bytes]:
    return [bson.encode(sample_document(i)) for i in range(start, start + count)]


class _Inserts(monitoring.CommandListener):
    """The documents of every insert command the client sent, as published."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.sent.append([bytes(d.raw) for d in event.command["documents"]])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


@pytest.fixture
def no_bulk_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any insert that would still go through PyMongo's bulk API."""

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("bulk_write used for a PyMongo client")

    monkeypatch.setattr(AsyncCollection, "bulk_write", refused)


@pytest.mark.parametrize("compression", [None, ZlibContext(6)])
def test_message_is_the_one_pymongo_builds(compression: Any) -> None:
    """Our OP_MSG, byte for byte, is PyMongo's own encoding of the same insert
    (its request id aside), compressed or not."""
    documents = _documents(40)
    command = {"insert": "c", "ordered": True, "$db": "d"}
    _, ours = _rawinsert._message(bson.encode(command), b"".join(documents), compression)
    reference = {
        "insert": "c",
        "ordered": True,
        "documents": [RawBSONDocument(d) for d in documents],
    }
    _, theirs, _, _ = _op_msg(0, reference, "d", None, bson.DEFAULT_CODEC_OPTIONS, compression)
    if compression is not None:  # OP_COMPRESSED: compare what it holds
        assert ours[12:21] == theirs[12:21]  # opCode, original opCode, uncompressed size
        ours, theirs = zlib.decompress(ours[25:]), zlib.decompress(theirs[25:])
        assert ours == theirs
    else:
        assert ours[:4] + ours[8:] == theirs[:4] + theirs[8:]


def test_batch_end_respects_bytes_and_count() -> None:
    sizes = [10, 10, 10, 10, 30, 10]
    assert _rawinsert.batch_end(sizes, 0, 35, 100) == 3
    assert _rawinsert.batch_end(sizes, 0, 1000, 2) == 2
    assert _rawinsert.batch_end(sizes, 3, 39, 100) == 4
    assert _rawinsert.batch_end(sizes, 4, 5, 100) == 5  # one too large still goes alone
    assert _rawinsert.batch_end(sizes, 6, 100, 100) == 6


async def test_documents_arrive_byte_for_byte(
    mongo_uri: str, new_database: str, no_bulk_write: None
) -> None:
    documents = _documents(2500)
    async with await Source.connect(mongo_uri) as source:
        assert await source.insert_raw(new_database, "docs", documents) == 2500
    assert server_documents(mongo_uri, new_database, "docs") == documents


async def test_through_an_authenticated_connection(
    mongo_auth_uri: str, new_database: str, no_bulk_write: None
) -> None:
    documents = _documents(300)
    async with await Source.connect(mongo_auth_uri) as source:
        assert await source.insert_raw(new_database, "docs", documents) == 300
    try:
        assert server_documents(mongo_auth_uri, new_database, "docs") == documents
    finally:
        with MongoClient(mongo_auth_uri) as client:
            client.drop_database(new_database)


@contextlib.contextmanager
def _limits(max_count: int, max_bytes: int) -> Iterator[None]:
    """Connections made meanwhile believe the server takes at most ``max_count``
    documents and ``max_bytes`` bytes per message (their hello says so)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Hello, "max_write_batch_size", property(lambda self: max_count))
        patch.setattr(Hello, "max_message_size", property(lambda self: max_bytes))
        yield


async def test_split_at_max_write_batch_size_and_max_message_size(
    mongo_uri: str, new_database: str, no_bulk_write: None
) -> None:
    # Runs of ten small documents, then ten of ~600 bytes: both limits bind in turn.
    documents = [
        bson.encode({"_id": i, "pad": "x" * (600 if i % 20 >= 10 else 1)}) for i in range(60)
    ]
    max_count, max_bytes = 7, 2500
    listener = _Inserts()
    with _limits(max_count, max_bytes):
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo_uri, event_listeners=[listener]
        )
        try:
            async with await Source.connect(client) as source:
                assert await source.insert_raw(new_database, "docs", documents) == 60
        finally:
            await client.close()
    assert [d for batch in listener.sent for d in batch] == documents
    assert len(listener.sent) > len(documents) // max_count
    assert all(0 < len(batch) <= max_count for batch in listener.sent)
    assert all(sum(map(len, batch)) < max_bytes for batch in listener.sent)
    assert any(len(batch) < max_count for batch in listener.sent[:-1])  # bytes bound too
    assert server_documents(mongo_uri, new_database, "docs") == documents


async def _duplicate(
    mongo_uri: str, database: str, documents: list[bytes], repeated: list[bytes]
) -> tuple[SourceError, list[bytes]]:
    """The error of inserting ``repeated`` after ``documents``, and what the collection holds."""
    with MongoClient(mongo_uri) as sync:
        sync[database].drop_collection("docs")
    async with await Source.connect(mongo_uri) as source:
        await source.insert_raw(database, "docs", documents)
        with pytest.raises(SourceError) as raised:
            await source.insert_raw(database, "docs", repeated)
    return raised.value, server_documents(mongo_uri, database, "docs")


@pytest.mark.parametrize("split", [False, True])
async def test_duplicate_key_is_reported_as_bulk_write_did(
    mongo_uri: str, new_database: str, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    """An ordered insert stops at the duplicate, and the error (message, code,
    details with the failing document and its index) equals bulk_write's; with
    ``split`` the duplicate sits in the third command of the insert."""
    if split:
        monkeypatch.setattr(Hello, "max_write_batch_size", property(lambda self: 4))
    documents = _documents(20)
    repeated = _documents(10, start=20)
    repeated.insert(9, documents[3])  # the 10th of the second insert

    raw_error, raw_held = await _duplicate(mongo_uri, new_database, documents, repeated)
    monkeypatch.setattr(_rawinsert, "supports", lambda collection: False)
    bulk_error, bulk_held = await _duplicate(mongo_uri, new_database, documents, repeated)

    assert raw_held == bulk_held == documents + repeated[:9]
    cause = raw_error.__cause__
    assert isinstance(cause, BulkWriteError) and isinstance(bulk_error.__cause__, BulkWriteError)
    assert str(raw_error) == str(bulk_error)
    assert cause.details == bulk_error.__cause__.details
    assert cause.details["nInserted"] == 9
    [write_error] = cause.details["writeErrors"]
    assert (write_error["index"], write_error["code"]) == (9, DUPLICATE_KEY)
    assert write_error["op"].raw == documents[3]
    assert error_code(raw_error) == error_code(bulk_error)


async def test_a_motor_client_inserts_through_bulk_write(mongo_uri: str, new_database: str) -> None:
    documents = _documents(500)
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(mongo_uri)
    try:
        assert not _rawinsert.supports(client[new_database].docs)
        async with await Source.connect(client) as source:
            assert await source.insert_raw(new_database, "docs", documents) == 500
    finally:
        client.close()
    assert server_documents(mongo_uri, new_database, "docs") == documents


async def test_an_unacknowledged_client_keeps_bulk_write(
    mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """w=0 cannot count what was stored: such a client keeps today's path (and
    error); so does every client of a PyMongo without the hooks used."""
    plain: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    unacknowledged: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, w=0)
    try:
        assert _rawinsert.supports(plain.db.docs)
        assert not _rawinsert.supports(unacknowledged.db.docs)
        monkeypatch.setattr(_rawinsert, "HOOKED", False)
        assert not _rawinsert.supports(plain.db.docs)
    finally:
        await plain.close()
        await unacknowledged.close()
