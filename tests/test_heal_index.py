"""Heal through the manifest index (docs/format.md, section 18), into real FerretDB.

A heal of one collection from an archive of 10,000 reads at most 64 KiB
besides the collection's own members (counted by the storage); without an
index, or with a bad one, it reads the whole sidecar and heals all the same.
Backup, ``--also``, copy and prune write, mirror, copy and delete the index.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from catalog_support import at, backup_at
from helpers import (
    Destination,
    make_destination,
    s3_client,
    s3_config,
    seed,
    server_documents,
    split_bson,
)
from pymongo import MongoClient

import mongosnap
from mongosnap import MemoryStorage, backup, copy, heal, prune
from mongosnap.archive import index as index_module
from mongosnap.archive.index import index_key
from mongosnap.archive.manifest import MANIFEST_SUFFIX, Manifest, manifest_key
from mongosnap.pipelines.leftovers import ORPHAN_SIDECAR, find_leftovers
from mongosnap.storage import LocalStorage

sys.path.insert(0, str(Path(__file__).parent / "archive"))
from index_support import documents, write_many

KIB = 1024


class ReadCounting(MemoryStorage):
    """A real in-memory storage that counts the bytes its reads return."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in super().read(key, start, end):
            self.bytes_read += len(chunk)
            yield chunk

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        data = await super().read_bytes(key, limit=limit)
        self.bytes_read += len(data)
        return data

    def clone(self) -> ReadCounting:
        other = ReadCounting()
        other._objects = dict(self._objects)
        return other


@pytest.fixture(scope="module")
def big(mongo_uri: str) -> Iterator[tuple[ReadCounting, str, Manifest]]:
    """An archive of 10,000 collections of database DB (written by the writer)."""
    database = f"mongosnap_index_{uuid.uuid4().hex[:10]}"
    storage = ReadCounting()
    key, manifest, _ = asyncio.run(write_many(storage, 10_000, databases=(database,)))
    yield storage, key, manifest
    with MongoClient(mongo_uri) as client:
        client.drop_database(database)


def own_bytes(manifest: Manifest, name: str) -> int:
    entry = next(c for c in manifest.collections if c.name == name)
    assert entry.bson is not None
    return entry.bson.end - entry.metadata.offset


def assert_healed(uri: str, database: str, name: str) -> None:
    assert sorted(server_documents(uri, database, name)) == sorted(
        split_bson(documents(database, name))
    )


async def test_heal_of_one_collection_reads_at_most_64_kib_of_manifest(
    mongo_uri: str, big: tuple[ReadCounting, str, Manifest]
) -> None:
    storage, _, manifest = big
    database = manifest.databases[0]
    storage = storage.clone()

    report = await heal(mongo_uri, storage, database=database, collections=["c07777"])

    assert report.ok and [o.name for o in report.restored] == ["c07777"]
    assert_healed(mongo_uri, database, "c07777")
    assert storage.bytes_read - own_bytes(manifest, "c07777") <= 64 * KIB


@pytest.mark.parametrize("index", ["absent", "garbage", "lying"])
async def test_without_a_usable_index_heal_reads_the_sidecar(
    index: str,
    mongo_uri: str,
    big: tuple[ReadCounting, str, Manifest],
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage, key, manifest = big
    database = manifest.databases[0]
    name = {"absent": "c00001", "garbage": "c00002", "lying": "c09999"}[index]
    storage = storage.clone()
    good = await storage.read_bytes(index_key(key), limit=1 << 20)
    await storage.delete(index_key(key))
    if index == "garbage":
        await storage.put(index_key(key), b'{"format": "mongosnap-manifest-index"')
    elif index == "lying":  # the last page's range moved by one entry
        await storage.put(index_key(key), good.replace(b'"c09999",', b'"c09999",1', 1))

    with caplog.at_level(logging.WARNING, logger="mongosnap.catalog"):
        report = await heal(mongo_uri, storage, database=database, collections=[name])

    assert report.ok and [o.name for o in report.restored] == [name]
    assert_healed(mongo_uri, database, name)
    assert storage.bytes_read > len(manifest.to_json())  # the whole sidecar, at least
    assert ("manifest index not used" in caplog.text) == (index != "absent")


@pytest.fixture
def indexing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every archive gets an index (small real backups exercise the plumbing)."""
    monkeypatch.setattr(index_module, "INDEX_THRESHOLD", 1)


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"a": 20, "b": 10, "c": 5})
    return new_database


async def read(storage: Any, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key)])


async def test_backup_also_and_copy_write_the_index_before_the_sidecar(
    indexing: None, seeded: str, mongo_uri: str, tmp_path: Path, testbed: Any, new_bucket: Any
) -> None:
    main, second = LocalStorage(tmp_path / "main"), LocalStorage(tmp_path / "second")
    result = await backup(mongo_uri, main, database=seeded, also=[second])
    key = result.archive_key
    index = await read(main, index_key(key))
    assert await read(second, index_key(key)) == index
    target = make_destination("moto", tmp_path, testbed, new_bucket)

    report = await copy(main, target.url, target_s3=target.s3)

    assert [c.key for c in report.archives] == [key]
    remote = target.storage()
    try:
        assert await read(remote, index_key(key)) == index
        assert await read(remote, manifest_key(key)) == await read(main, manifest_key(key))
    finally:
        await remote.aclose()


async def test_prune_deletes_the_index_and_leftovers_show_an_orphan(
    indexing: None, seeded: str, mongo_uri: str, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "backups")
    older = await backup_at(at(1), mongo_uri, storage, seeded)
    newer = await backup_at(at(2), mongo_uri, storage, seeded)

    report = await prune(storage, keep_last=1)

    assert [a.key for a in report.deleted] == [older]
    left = sorted([o.key async for o in storage.list()])
    assert left == sorted([newer, manifest_key(newer), index_key(newer)])
    await storage.delete(manifest_key(newer))
    await storage.delete(newer)
    found = await find_leftovers(storage)
    assert [(x.key, x.kind, x.archive) for x in found] == [
        (index_key(newer), ORPHAN_SIDECAR, newer)
    ]


class SidecarFails(LocalStorage):
    """A real directory whose sidecar puts fail."""

    async def put(self, key: str, data: bytes, **kwargs: Any) -> Any:
        if key.endswith(MANIFEST_SUFFIX):
            raise mongosnap.StorageError(f"{key}: injected write failure")
        return await super().put(key, data, **kwargs)


async def test_a_backup_whose_sidecar_fails_leaves_no_index(
    indexing: None, seeded: str, mongo_uri: str, tmp_path: Path
) -> None:
    storage = SidecarFails(tmp_path / "backups")
    with pytest.raises(mongosnap.StorageError):
        await backup(mongo_uri, storage, database=seeded)
    assert [o.key async for o in storage.list()] == []


async def test_backup_locks_the_index_and_prune_keeps_it_while_locked(
    indexing: None, s3_endpoint: Any, new_locked_bucket: Any, mongo_uri: str, seeded: str
) -> None:
    bucket = new_locked_bucket(s3_endpoint)
    dest = Destination(f"s3://{bucket}/nightly", s3_config(s3_endpoint))
    client = s3_client(s3_endpoint)
    locked = await backup(
        mongo_uri, dest.url, database=seeded, s3=dest.s3, lock_for=timedelta(days=1)
    )
    head = client.head_object(Bucket=bucket, Key=f"nightly/{index_key(locked.archive_key)}")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    old = await backup_at(at(1), mongo_uri, dest, seeded)
    middle = await backup_at(at(2), mongo_uri, dest, seeded)
    hour = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    client.put_object_retention(  # only the index of the oldest: prune must keep it all
        Bucket=bucket,
        Key=f"nightly/{index_key(old)}",
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": hour},
    )

    report = await prune(dest.url, keep_last=1, s3=dest.s3)

    assert [d.archive.key for d in report.locked] == [old]
    assert [a.key for a in report.deleted] == [middle]
    assert index_key(f"nightly/{middle}") not in _keys(client, bucket)


def _keys(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


async def test_a_mirror_whose_sidecar_fails_keeps_no_index(
    indexing: None, seeded: str, mongo_uri: str, tmp_path: Path
) -> None:
    main, mirror = LocalStorage(tmp_path / "main"), SidecarFails(tmp_path / "mirror")

    result = await backup(mongo_uri, main, database=seeded, also=[mirror])

    assert [(m["complete"], bool(m["error"])) for m in result.also] == [(False, True)]
    assert [o.key async for o in mirror.list()] == []
    key = result.archive_key
    assert sorted([o.key async for o in main.list()]) == sorted(
        [key, manifest_key(key), index_key(key)]
    )
