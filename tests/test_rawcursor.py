"""The fast raw-batch reply unpacker gives exactly what PyMongo's own unpacker gives."""

from __future__ import annotations

import random
from typing import Any

import bson
import pytest
from bson import Binary, Int64, ObjectId, Regex, Timestamp
from bson.codec_options import DEFAULT_CODEC_OPTIONS
from bson.raw_bson import RawBSONDocument
from helpers import sample_document, server_documents, split_bson
from pymongo import AsyncMongoClient, MongoClient
from pymongo.message import _RAW_ARRAY_BSON_OPTIONS

from mongosnap._rawcursor import FastRawBatchCursor, raw_batch_cursor, unpack_cursor_reply

FIELDS = {"cursor": {"firstBatch": 1, "nextBatch": 1}}


def reference(reply: bytes) -> dict[str, Any]:
    """What PyMongo's raw batch cursor makes of a reply."""
    decoded = bson._decode_selective(RawBSONDocument(reply), FIELDS, _RAW_ARRAY_BSON_OPTIONS)
    bson._convert_raw_document_lists_to_streams(decoded)
    return _plain(decoded)


def _plain(value: Any) -> Any:
    if isinstance(value, RawBSONDocument):
        return {k: _plain(v) for k, v in bson.decode(value.raw).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _reply(key: str, documents: list[dict[str, Any]], extra: dict[str, Any]) -> bytes:
    cursor = {key: documents, "id": Int64(42), "ns": "db.coll", **extra.pop("cursor", {})}
    return bson.encode({"cursor": cursor, **extra})


EXTRAS: list[dict[str, Any]] = [
    {"ok": 1.0},
    {
        "ok": 1.0,
        "$clusterTime": {"clusterTime": Timestamp(1, 2), "signature": {"hash": Binary(b"x" * 20)}},
        "operationTime": Timestamp(1, 2),
    },
    {"cursor": {"postBatchResumeToken": {"_data": "abc"}, "atClusterTime": Timestamp(3, 4)}},
    {"ok": 1.0, "re": Regex("a.*", "i"), "oid": ObjectId(), "n": None, "f": 1.5, "b": True},
]


@pytest.mark.parametrize("extra", range(len(EXTRAS)))
@pytest.mark.parametrize("key", ["firstBatch", "nextBatch"])
@pytest.mark.parametrize("count", [0, 1, 57])
def test_same_as_pymongo(extra: int, key: str, count: int) -> None:
    reply = _reply(key, [sample_document(i) for i in range(count)], dict(EXTRAS[extra]))
    assert _plain(unpack_cursor_reply(reply, DEFAULT_CODEC_OPTIONS)) == reference(reply)


def test_error_reply_is_decoded_whole() -> None:
    reply = bson.encode({"ok": 0.0, "errmsg": "boom", "code": 2})
    assert unpack_cursor_reply(reply, DEFAULT_CODEC_OPTIONS) == bson.decode(reply)


def test_random_replies_match_with_a_fixed_seed() -> None:
    rng = random.Random(7)
    for _ in range(300):
        documents = [{"_id": i, "v": rng.randbytes(rng.randrange(40))} for i in range(20)]
        extra = dict(rng.choice(EXTRAS))
        reply = _reply(rng.choice(["firstBatch", "nextBatch"]), documents, extra)
        assert _plain(unpack_cursor_reply(memoryview(reply), DEFAULT_CODEC_OPTIONS)) == (
            reference(reply)
        )


async def test_cursor_reads_ferretdb_byte_for_byte(mongo_uri: str, new_database: str) -> None:
    with MongoClient(mongo_uri) as sync:
        sync[new_database].docs.insert_many([sample_document(i) for i in range(2500)])
    expected = server_documents(mongo_uri, new_database, "docs")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        cursor = raw_batch_cursor(client[new_database].docs, batch_size=300)
        assert isinstance(cursor, FastRawBatchCursor)
        batches = [bytes(b) async for b in cursor]
    finally:
        await client.close()
    assert len(batches) > 5
    assert split_bson(b"".join(batches)) == expected
