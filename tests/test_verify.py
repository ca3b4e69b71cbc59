"""verify: sound archives pass; every kind of damage is found and classed.

Archives come from real backups (a directory and both S3 servers); legacy ones
are re-packed with GNU tar; damaged and hostile ones are made from those or
built with tarfile.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import pytest
from catalog_support import (
    HOSTILE,
    SIZES,
    at,
    backup_at,
    get,
    hostile_archive,
    rename_member,
    repack_legacy,
    replace,
    replace_stored,
    sidecar,
)
from helpers import make_destination, seed

from mongosnap import ArchiveStatus, BucketNotFound, MemoryStorage, VerifyReport, verify
from mongosnap._errors import (
    CorruptArchive,
    NoBackupsFound,
    ObjectNotFound,
    TruncatedArchive,
    UnsafeArchive,
)
from mongosnap.archive.manifest import manifest_key
from mongosnap.codecs import get_codec
from mongosnap.progress import Stage
from mongosnap.storage import Storage


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    return new_database


def counts(report: VerifyReport) -> dict[str, int]:
    return {c.name: c.documents for c in report.collections}


def oks(report: VerifyReport) -> dict[str, bool]:
    return {c.name: c.ok for c in report.collections}


def errors(report: VerifyReport) -> list[type[Exception]]:
    return [p.error for p in report.problems]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("kind", ["local", "moto", "versitygw"])
async def test_a_sound_archive_verifies(
    kind: str,
    codec: str,
    tmp_path: Path,
    testbed: Any,
    new_bucket: Any,
    mongo_uri: str,
    seeded: str,
) -> None:
    place = make_destination(kind, tmp_path, testbed, new_bucket)
    key = await backup_at(at(1), mongo_uri, place, seeded, codec=codec)
    events: list[Any] = []

    report = await verify(place.url, s3=place.s3, progress=events.append)

    assert report.ok, report.problems
    assert report.exit_code == 0
    assert (report.archive, report.status) == (key, ArchiveStatus.COMPLETE)
    assert counts(report) == SIZES
    assert all(c.ok and c.database == seeded for c in report.collections)
    storage = place.storage()
    try:
        manifest = await sidecar(storage, key)
        size = len(await get(storage, key))
    finally:
        await storage.aclose()
    assert {c.name: c.bytes for c in report.collections} == {
        c.name: c.bson_bytes for c in manifest.collections
    }
    # the whole object once, then each collection's range once more
    ranges = sum(c.bson.end - c.metadata.offset for c in manifest.collections if c.bson)
    assert report.bytes_read == size + ranges
    assert {e.stage for e in events} == {Stage.STARTED, Stage.BATCH, Stage.DONE}
    assert report.to_dict()["ok"] is True


async def test_exact_key_and_legacy_archive(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    legacy = "2025-01-02-03-00-00-mongodb-dump.tar.gz"
    await storage.put(legacy, repack_legacy(await get(storage, key), tmp_path))

    report = await verify(storage)  # latest: the legacy one

    assert (report.archive, report.status, report.ok) == (legacy, ArchiveStatus.LEGACY, True)
    assert counts(report) == SIZES
    assert report.bytes_read == len(await get(storage, legacy))
    assert (await verify(storage, key)).status is ArchiveStatus.COMPLETE


async def test_a_changed_bson_byte_fails_its_checksum(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded, codec="none")
    entry = next(c for c in (await sidecar(storage, key)).collections if c.name == "users")
    assert entry.bson is not None
    data = bytearray(await get(storage, key))
    body = data.index(b"h\xc3\xa9llo w\xc3\xb6rld", entry.bson.offset)  # inside a string value
    data[body] ^= 0x01
    await replace(storage, key, bytes(data))

    report = await verify(storage, key)

    assert report.status is ArchiveStatus.COMPLETE
    assert errors(report) == [CorruptArchive]
    assert "users.bson: sha256 differs" in report.problems[0].message
    assert report.exit_code == 31
    assert {c.name: c.ok for c in report.collections} == {
        "users": False,
        "orders": True,
        "empty": True,
    }


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_a_flipped_compressed_byte_is_corrupt(
    codec: str, mongo_uri: str, seeded: str
) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded, codec=codec)
    entry = next(c for c in (await sidecar(storage, key)).collections if c.name == "orders")
    assert entry.bson is not None
    data = bytearray(await get(storage, key))
    data[(entry.bson.offset + entry.bson.end) // 2] ^= 0x40
    await replace(storage, key, bytes(data))

    report = await verify(storage, key)

    assert report.problems and report.problems[0].error is CorruptArchive, report.problems
    assert report.exit_code == 31


async def test_truncated_archives(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    whole = await get(storage, key)
    await replace(storage, key, whole[: len(whole) * 2 // 3])

    report = await verify(storage, key)

    assert report.status is ArchiveStatus.INCOMPLETE
    assert errors(report) == [TruncatedArchive, TruncatedArchive]
    assert report.exit_code == 32
    assert "archive is incomplete" in report.problems[0].message

    legacy = repack_legacy(whole, tmp_path)
    cut = "2025-01-09-03-00-00-mongodb-dump.tar.gz"
    await storage.put(cut, legacy[: len(legacy) // 2])
    report = await verify(storage, cut)
    assert report.status is ArchiveStatus.LEGACY
    assert errors(report) == [TruncatedArchive]


@pytest.mark.parametrize(
    "content",
    [os.urandom(5000), gzip.compress(b"just some text, not a tar archive\n" * 40), b""],
    ids=["random", "gzip-text", "empty"],
)
async def test_not_an_archive(content: bytes) -> None:
    storage = MemoryStorage()
    await storage.put("2025-01-01-00-00-00-mongodb-dump.tar.gz", content)
    report = await verify(storage)
    assert report.status is ArchiveStatus.LEGACY
    expected = TruncatedArchive if not content else CorruptArchive
    assert errors(report) == [expected], report.problems


async def test_missing_sidecar(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    await storage.delete(manifest_key(key))

    report = await verify(storage, key)

    assert report.status is ArchiveStatus.INCOMPLETE
    assert errors(report) == [CorruptArchive]  # only that: the contents match the embedded one
    assert "no sidecar manifest" in report.problems[0].message
    assert counts(report) == SIZES
    with pytest.raises(NoBackupsFound):
        await verify(storage)


async def test_unreadable_sidecar(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    await replace(storage, manifest_key(key), b"{'not': json}")
    report = await verify(storage, key)
    assert report.status is ArchiveStatus.INCOMPLETE
    assert errors(report) == [CorruptArchive]
    assert "not valid JSON" in report.problems[0].message
    assert report.exit_code == 31


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_a_missing_member(codec: str, mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded, codec=codec)
    entry = next(c for c in (await sidecar(storage, key)).collections if c.name == "orders")
    assert entry.bson is not None
    renamed = entry.bson.name.replace("orders", "ordxrs")
    data = rename_member(await get(storage, key), codec, entry.bson.offset, renamed)
    await replace(storage, key, data)

    report = await verify(storage, key)

    assert report.status is ArchiveStatus.COMPLETE  # same size, same sidecar
    messages = [p.message for p in report.problems]
    assert errors(report) == [CorruptArchive, CorruptArchive]
    assert messages == [f"{entry.bson.name} is missing", f"{renamed} is not in the manifest"]
    assert {c.name: c.ok for c in report.collections}["orders"] is False


async def test_a_wrong_range_is_found_by_the_range_check(mongo_uri: str, seeded: str) -> None:
    """Stream and manifests agree, but one range is off: only the ranged read sees it."""
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    text = await get(storage, manifest_key(key))
    manifest = await sidecar(storage, key)
    entry = next(c for c in manifest.collections if c.name == "orders")
    old = f'"offset": {entry.metadata.offset},'.encode()
    new = f'"offset": {entry.metadata.offset + 1},'.encode()
    assert len(old) == len(new) and text.count(old) == 1
    changed = text.replace(old, new)
    header = get_codec("gzip").stored_length(512)
    padded = changed + bytes(-len(changed) % 512)
    data = replace_stored(
        await get(storage, key), "gzip", manifest.manifest.offset + header, padded
    )
    await replace(storage, key, data)
    await replace(storage, manifest_key(key), changed)

    report = await verify(storage, key)

    assert report.status is ArchiveStatus.COMPLETE
    assert errors(report) == [CorruptArchive], report.problems
    assert report.problems[0].message.startswith(f"{seeded}.orders: range [")
    assert {c.name: c.ok for c in report.collections} == {
        "users": True,
        "orders": False,
        "empty": True,
    }


@pytest.mark.parametrize("kind", HOSTILE)
async def test_hostile_archives_are_unsafe(kind: str) -> None:
    storage = MemoryStorage()
    await storage.put("2025-01-01-00-00-00-mongodb-dump.tar.gz", hostile_archive(kind))
    report = await verify(storage)
    assert report.status is ArchiveStatus.LEGACY
    assert report.problems and report.problems[0].error is UnsafeArchive, report.problems
    assert report.exit_code == 33


async def test_storage_errors_raise(s3_endpoint: Any, tmp_path: Path) -> None:
    from helpers import s3_config

    with pytest.raises(BucketNotFound):
        await verify("s3://mongosnap-no-such-bucket/x", s3=s3_config(s3_endpoint))
    with pytest.raises(ObjectNotFound):
        await verify(tmp_path, "2025-01-01-00-00-00-mongodb-dump.tar.gz")
    with pytest.raises(NoBackupsFound):
        await verify(tmp_path)


async def test_a_storage_passed_in_stays_open(mongo_uri: str, seeded: str) -> None:
    storage: Storage = MemoryStorage()
    await backup_at(at(1), mongo_uri, storage, seeded)
    assert (await verify(storage)).ok
    assert (await verify(storage)).ok


async def test_a_sidecar_that_differs_from_the_embedded_manifest(
    mongo_uri: str, seeded: str
) -> None:
    storage = MemoryStorage()
    key = await backup_at(at(1), mongo_uri, storage, seeded)
    text = await get(storage, manifest_key(key))
    changed = text.replace(b'"hosts": [\n      "', b'"hosts": [\n      "x', 1)
    assert changed != text
    await replace(storage, manifest_key(key), changed)

    report = await verify(storage, key)

    assert report.status is ArchiveStatus.COMPLETE  # parses, names it, same size
    assert [p.message for p in report.problems] == [
        "the embedded manifest differs from the sidecar"
    ]
    assert report.exit_code == 31
