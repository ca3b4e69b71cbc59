"""Documents near the 16 MiB limit: FerretDB packs several into one reply larger
than the driver accepts; the dump shrinks its batches and loses nothing."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import split_bson
from pymongo import MongoClient

from mongosnap import backup, restore
from mongosnap._errors import SourceError
from mongosnap.source import Source

HUGE = 16 * 1024 * 1024 - 200  # the binary field: the document is just under 16 MiB


@pytest.fixture(scope="module")
def huge_database(testbed: Any) -> Any:
    """Five small documents, three of ~16 MiB, five small, in natural order."""
    uri = str(testbed.mongo_uri)
    name = f"mongosnap_huge_{os.getpid()}"
    with MongoClient(uri) as client:
        coll = client[name]["blobs"]
        for n in range(5):
            coll.insert_one({"_id": n, "small": "x" * n})
        for n in range(5, 8):
            coll.insert_one({"_id": n, "data": os.urandom(HUGE)})
        for n in range(8, 13):
            coll.insert_one({"_id": n, "small": "y" * n})
    yield name
    with MongoClient(uri) as client:
        client.drop_database(name)


def one_by_one(uri: str, database: str) -> list[bytes]:
    """The documents as the server sends them, one per reply (always small enough)."""
    with MongoClient(uri) as client:
        raw = b"".join(client[database]["blobs"].find_raw_batches(batch_size=1))
    return split_bson(raw)


async def test_raw_batches_shrink_and_resume_without_gap_or_duplicate(
    mongo_uri: str, huge_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mongosnap.source")
    async with await Source.connect(mongo_uri) as src:
        # 4 small ones fit; the next batch (1 small + 3 huge) is a ~50 MB reply
        batches = [b async for b in src.raw_batches(huge_database, "blobs", batch_size=4)]
    assert split_bson(b"".join(batches)) == one_by_one(mongo_uri, huge_database)
    warnings = [r for r in caplog.records if r.name == "mongosnap.source"]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)
    assert "larger than the driver accepts" in warnings[0].getMessage()


async def test_backup_and_restore_of_16_mib_documents(
    tmp_path: Path, mongo_uri: str, huge_database: str
) -> None:
    original = one_by_one(mongo_uri, huge_database)
    result = await backup(mongo_uri, str(tmp_path), database=huge_database, batch_size=8)
    assert result.documents == 13
    target = huge_database + "_back"
    try:
        await restore(
            mongo_uri,
            str(tmp_path),
            result.archive_key,
            database=huge_database,
            to_database=target,
            workers=1,
        )
        assert sorted(one_by_one(mongo_uri, target)) == sorted(original)
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(target)


async def test_a_shift_before_the_resume_point_fails_instead_of_skipping(
    mongo_uri: str, huge_database: str
) -> None:
    """A document deleted before the resume point would shift natural order by one:
    the resumed find must notice instead of silently skipping a document."""
    async with await Source.connect(mongo_uri) as src:
        batches = src.raw_batches(huge_database, "blobs", batch_size=4)
        first = await anext(batches)
        assert len(split_bson(first)) == 4
        with MongoClient(mongo_uri) as client:
            client[huge_database]["blobs"].delete_one({"_id": 0})
        try:
            with pytest.raises(SourceError, match="changed while its dump was resumed"):
                async for _ in batches:
                    pass
        finally:
            await batches.aclose()
            with MongoClient(mongo_uri) as client:
                client[huge_database]["blobs"].insert_one({"_id": 0, "small": ""})
