"""The catalog: archive listing, status rules, resolve and sidecar loading,
on archives made by real backups into a directory and both S3 servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from catalog_support import (
    SIZES,
    at,
    backup_at,
    get,
    repack_legacy,
    replace,
)
from helpers import Destination, make_destination, seed
from pymongo import MongoClient

from mongosnap import ArchiveStatus, LocalStorage, MemoryStorage, list_archives
from mongosnap._errors import (
    AccessDenied,
    BucketNotFound,
    CorruptArchive,
    NoBackupsFound,
    ObjectNotFound,
    UsageError,
)
from mongosnap.archive.manifest import MAX_MANIFEST_BYTES, Manifest, manifest_key
from mongosnap.catalog import TAIL_BYTES, load_manifest, read_sidecar, resolve
from mongosnap.storage import Storage


@pytest.fixture(params=["local", "moto", "versitygw"])
def place(request: Any, tmp_path: Path, testbed: Any, new_bucket: Any) -> Destination:
    return make_destination(request.param, tmp_path, testbed, new_bucket)


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    return new_database


async def test_listing_is_newest_first_with_every_status(
    place: Destination, mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    storage = place.storage()
    try:
        old = await backup_at(at(1), mongo_uri, place, seeded)
        no_sidecar = await backup_at(at(2), mongo_uri, place, seeded)
        await storage.delete(manifest_key(no_sidecar))
        legacy = "2025-01-03-03-00-00-mongodb-dump.tar.gz"
        await storage.put(legacy, repack_legacy(await get(storage, old), tmp_path / "legacy"))
        bad_json = await backup_at(at(4), mongo_uri, place, seeded)
        await replace(storage, manifest_key(bad_json), b'{"format": "mongosnap-archive", ')
        newest_complete = await backup_at(at(5), mongo_uri, place, seeded, codec="zstd")
        truncated = await backup_at(at(6), mongo_uri, place, seeded)
        data = await get(storage, truncated)
        await replace(storage, truncated, data[: len(data) // 2])

        archives = await list_archives(storage)

        assert [a.key for a in archives] == [
            truncated,
            newest_complete,
            bad_json,
            legacy,
            no_sidecar,
            old,
        ]
        status = {a.key: a.status for a in archives}
        assert status == {
            truncated: ArchiveStatus.INCOMPLETE,
            newest_complete: ArchiveStatus.COMPLETE,
            bad_json: ArchiveStatus.INCOMPLETE,
            legacy: ArchiveStatus.LEGACY,
            no_sidecar: ArchiveStatus.INCOMPLETE,
            old: ArchiveStatus.COMPLETE,
        }
        by_key = {a.key: a for a in archives}
        assert "its sidecar manifest says" in by_key[truncated].problem
        assert "not valid JSON" in by_key[bad_json].problem
        assert "holds a mongosnap manifest" in by_key[no_sidecar].problem
        assert by_key[legacy].problem == by_key[old].problem == ""
        assert [a.created for a in archives] == [at(6), at(5), at(4), at(3), at(2), at(1)]
        assert by_key[newest_complete].codec == "zstd" and by_key[old].codec == "gzip"
        for info in archives:
            assert (info.manifest is not None) == (info.status is ArchiveStatus.COMPLETE)
            assert info.size == len(await get(storage, info.key))
        complete = by_key[newest_complete].manifest
        assert complete is not None
        assert {c.name: c.documents for c in complete.collections} == SIZES
        assert complete.totals.compressed_bytes == by_key[newest_complete].size

        latest = await resolve(storage, "latest")
        assert latest.key == newest_complete  # the newer INCOMPLETE one is passed over
        assert (await resolve(storage, truncated)).status is ArchiveStatus.INCOMPLETE
        assert (await resolve(storage, legacy)).status is ArchiveStatus.LEGACY
    finally:
        await storage.aclose()


async def test_latest_may_be_a_legacy_archive(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    legacy = "nightly-2025-01-02-03-00-00-mongodb-dump.tar.gz"
    await storage.put(legacy, repack_legacy(await get(storage, key), tmp_path))
    assert [a.key for a in await list_archives(storage)] == [legacy, key]
    found = await resolve(storage, "latest")
    assert (found.key, found.status, found.manifest) == (legacy, ArchiveStatus.LEGACY, None)


async def test_sidecar_of_another_archive_is_not_trusted(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    copy = "2025-01-07-03-00-00-mongodb-dump.tar.gz"
    await storage.put(copy, await get(storage, key))
    await storage.put(manifest_key(copy), await get(storage, manifest_key(key)))
    info = await resolve(storage, copy)
    assert info.status is ArchiveStatus.INCOMPLETE
    assert f"describes {key!r}" in info.problem
    assert (await resolve(storage, "latest")).key == key


async def test_resolve_exact_keys(place: Destination, mongo_uri: str, seeded: str) -> None:
    storage = place.storage()
    try:
        key = await backup_at(at(1), mongo_uri, place, seeded)
        info = await resolve(storage, key)
        assert (info.key, info.status) == (key, ArchiveStatus.COMPLETE)
        with pytest.raises(ObjectNotFound):
            await resolve(storage, "2030-01-01-00-00-00-mongodb-dump.tar.gz")
        with pytest.raises(UsageError):
            await resolve(storage, manifest_key(key))
        with pytest.raises(UsageError):
            await resolve(storage, "lastest")
    finally:
        await storage.aclose()


async def test_no_archives(place: Destination, tmp_path: Path) -> None:
    if place.root is not None:
        place.root.mkdir()  # an empty directory; a missing one is a missing bucket
    storage = place.storage()
    try:
        assert await list_archives(storage) == []
        with pytest.raises(NoBackupsFound):
            await resolve(storage, "latest")
        await storage.put("notes.txt", b"not an archive")
        await storage.put("2025-01-01-03-00-00-mongodb-dump.tar.gz.manifest.json", b"{}")
        assert await list_archives(storage) == []
        with pytest.raises(NoBackupsFound, match="no archive"):
            await resolve(storage, "latest")
    finally:
        await storage.aclose()
    with pytest.raises(BucketNotFound, match="does not exist"):  # as a missing bucket
        await resolve(LocalStorage(tmp_path / "nowhere"), "latest")


async def test_only_incomplete_archives_is_no_backup(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    await storage.delete(manifest_key(key))
    with pytest.raises(NoBackupsFound, match="1 incomplete"):
        await resolve(storage, "latest")


async def test_load_manifest(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    manifest = await load_manifest(storage, key)
    assert manifest == Manifest.from_json(await get(storage, manifest_key(key)))
    assert manifest.archive == key
    with pytest.raises(ObjectNotFound):
        await load_manifest(storage, "2030-01-01-00-00-00-mongodb-dump.tar.gz")
    await replace(storage, manifest_key(key), b"\xff\xfe garbage")
    with pytest.raises(CorruptArchive):
        await load_manifest(storage, key)
    await replace(storage, manifest_key(key), b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(CorruptArchive, match="larger than"):
        await read_sidecar(storage, key)
    assert "larger than" in (await resolve(storage, key)).problem


async def test_legacy_names_and_prefixes(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    legacy = repack_legacy(await get(storage, key), tmp_path)
    await storage.put("db1/mongodb-dump.tar.gz", legacy)
    await storage.put("db1/backup-20240105-mongodb-dump.tar.gz", legacy)
    await storage.put("db1/20240106_2210-mongodb-dump.tar.gz", legacy)
    await storage.put("db1/dump.tar.gz", legacy)  # not an archive name
    before = datetime.now(UTC) - timedelta(minutes=1)

    found = {a.key: a for a in await list_archives(storage, "db1/")}

    assert set(found) == {
        "db1/mongodb-dump.tar.gz",
        "db1/backup-20240105-mongodb-dump.tar.gz",
        "db1/20240106_2210-mongodb-dump.tar.gz",
    }
    assert all(a.status is ArchiveStatus.LEGACY and a.codec == "gzip" for a in found.values())
    assert found["db1/backup-20240105-mongodb-dump.tar.gz"].created == datetime(
        2024, 1, 5, tzinfo=UTC
    )
    assert found["db1/20240106_2210-mongodb-dump.tar.gz"].created == datetime(
        2024, 1, 6, 22, 10, tzinfo=UTC
    )
    assert found["db1/mongodb-dump.tar.gz"].created > before  # no date: when it was stored
    # A listing is one level: the root does not see what db1/ holds.
    assert [a.key for a in await list_archives(storage)] == [key]


class CountingStorage(MemoryStorage):
    """Records how many reads run at once and which ranges they ask for."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0
        self.ranges: list[tuple[str, int, int | None]] = []

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        self.ranges.append((key, start, end))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.01)
            async for chunk in super().read(key, start, end):
                yield chunk
        finally:
            self.running -= 1


async def test_reads_are_bounded_and_concurrent(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    source = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, source, seeded)
    archive = await get(source, key)
    side = await get(source, manifest_key(key))
    legacy = repack_legacy(archive, tmp_path)
    assert len(legacy) > TAIL_BYTES
    storage = CountingStorage()
    await _fill(storage, archive, side, legacy)

    archives = await list_archives(storage)

    assert len(archives) == 40
    assert 1 < storage.most <= 8
    sizes = {a.key: a.size for a in archives}
    for read_key, start, end in storage.ranges:
        if read_key.endswith(".manifest.json"):
            assert (start, end) == (0, None)
        else:  # only the tail of an archive without a sidecar
            assert end is not None and end - start <= TAIL_BYTES
            assert start == sizes[read_key] - TAIL_BYTES
    statuses = [a.status for a in archives]
    assert statuses.count(ArchiveStatus.LEGACY) == 20
    assert statuses.count(ArchiveStatus.INCOMPLETE) == 20  # each sidecar names another archive


async def _fill(storage: Storage, archive: bytes, side: bytes, legacy: bytes) -> None:
    for day in range(1, 21):
        name = f"2024-02-{day:02d}-00-00-00-mongodb-dump.tar.gz"
        await storage.put(name, archive)
        await storage.put(manifest_key(name), side)
        await storage.put(f"2024-03-{day:02d}-00-00-00-mongodb-dump.tar.gz", legacy)


class RefusingStorage(MemoryStorage):
    """Refuses to read sidecars, as a storage with a partial access policy would."""

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if key.endswith(".manifest.json"):
            raise AccessDenied(f"{key}: access denied")
        async for chunk in super().read(key, start, end):
            yield chunk


async def test_storage_errors_reach_the_caller_as_themselves(mongo_uri: str, seeded: str) -> None:
    storage = RefusingStorage()
    for day in (1, 2):
        await backup_at(at(day), mongo_uri, storage, seeded)
    with pytest.raises(AccessDenied):
        await list_archives(storage)
    with pytest.raises(AccessDenied):
        await resolve(storage, "latest")


async def test_a_manifest_longer_than_the_tail_is_still_found(
    mongo_uri: str, new_database: str
) -> None:
    with MongoClient(mongo_uri) as client:
        for i in range(130):
            client[new_database][f"collection_with_a_longish_name_{i:03d}"].insert_one({"i": i})
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, new_database)
    assert len(await get(storage, manifest_key(key))) > TAIL_BYTES
    await storage.delete(manifest_key(key))
    [info] = await list_archives(storage)
    assert info.status is ArchiveStatus.INCOMPLETE
    assert "holds a mongosnap manifest" in info.problem
