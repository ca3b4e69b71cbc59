"""restore: whole databases or some collections, never overwriting unless asked."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CommandLog, seed, server_documents
from pymongo import AsyncMongoClient, MongoClient

import mongosnap
from mongosnap import backup, restore

SIZES = {"apps": 200, "users": 50, "empty": 0}


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    return new_database


@pytest.fixture
def other_database(mongo_uri: str, seeded: str) -> str:
    name = f"{seeded}_copy"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


def assert_restored_as_seeded(uri: str, seeded: str, restored: str) -> None:
    """Every collection of SIZES in ``restored`` holds the seeded documents, byte for byte."""
    for name in SIZES:
        assert sorted(server_documents(uri, restored, name)) == sorted(
            server_documents(uri, seeded, name)
        ), name


async def test_restore_latest_into_another_database(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    result = await restore(mongo_uri, tmp_path, database=seeded, to_database=other_database)
    assert sorted(c.name for c in result.collections) == sorted(SIZES)
    assert_restored_as_seeded(mongo_uri, seeded, other_database)
    with MongoClient(mongo_uri) as client:
        names = {ix["name"] for ix in client[other_database].apps.list_indexes()}
    assert names == {"_id_", "by_i", "s_when"}
    assert result.bytes_fetched <= result.archive_size


async def test_restore_refuses_to_overwrite_and_names_them(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    with pytest.raises(mongosnap.CollectionExists, match="apps"):
        await restore(mongo_uri, tmp_path, database=seeded)


async def test_restore_with_drop_replaces(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    original = sorted(server_documents(mongo_uri, seeded, "users"))
    with MongoClient(mongo_uri) as client:
        client[seeded].users.insert_one({"added": "later"})
    result = await restore(mongo_uri, tmp_path, database=seeded, collections=["users"], drop=True)
    assert [c.name for c in result.collections] == ["users"]
    assert sorted(server_documents(mongo_uri, seeded, "users")) == original


async def test_restore_a_named_archive_and_patterns(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    first = await backup(mongo_uri, tmp_path, database=seeded)
    await backup(mongo_uri, tmp_path, database=seeded, include=["users"])
    result = await restore(
        mongo_uri,
        tmp_path,
        first.archive_key,
        database=seeded,
        include=["a*", "e*"],
        exclude=["empty"],
        to_database=other_database,
    )
    assert [c.name for c in result.collections] == ["apps"]
    assert result.archive_key == first.archive_key


def test_cli_restore(mongo_uri: str, seeded: str, other_database: str, tmp_path: Path) -> None:
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    run = [sys.executable, "-m", "mongosnap"]
    subprocess.run([*run, "backup", str(tmp_path), host, seeded, "-q"], check=True)
    done = subprocess.run(
        [
            *run,
            "restore",
            "latest",
            str(tmp_path),
            host,
            seeded,
            "--to-database",
            other_database,
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert {c["name"] for c in json.loads(done.stdout)["collections"]} == set(SIZES)
    again = subprocess.run(
        [*run, "restore", "latest", str(tmp_path), host, seeded, "--to-database", other_database],
        capture_output=True,
        text=True,
    )
    assert again.returncode == mongosnap.CollectionExists.exit_code
    assert "apps" in again.stderr and "Traceback" not in again.stderr


async def test_commands_per_collection(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    """A listCollections reads FerretDB's whole catalogue (docs/benchmarks.md):
    one for the whole run, then per collection only create, its inserts, its
    indexes and the rename into place, and the staging copy's UUID (a
    listCollections of that name after the create and before the rename); the
    leases of all of them taken with one insert and given back with one
    delete, none renewed before its rename (each was taken less than a third
    of a lease ago); per run one hello (the server's clock) and a find and
    drop of the emptied lease collection. The data intact."""
    await backup(mongo_uri, tmp_path, database=seeded)
    commands = CommandLog()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, event_listeners=[commands])
    try:
        result = await restore(client, tmp_path, database=seeded, to_database=other_database)
    finally:
        await client.close()
    assert [c.status for c in result.collections] == ["restored"] * len(SIZES)
    assert commands.sent() == {
        "ping": 1,
        "listCollections": 1 + 2 * len(SIZES),
        "create": len(SIZES),
        "insert": sum(1 for n in SIZES.values() if n) + 1,  # one batch each, the leases
        "createIndexes": 1,  # apps alone has indexes besides _id
        "renameCollection": len(SIZES),
        "hello": 1,
        "delete": 1,
        "find": 1,
        "drop": 1,
    }, commands.sent()
    assert_restored_as_seeded(mongo_uri, seeded, other_database)


async def test_a_name_created_after_the_listing_is_left_alone(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    """The target is listed once; a collection an application creates after
    that, before its turn, is never overwritten: the rename into place fails
    on it, the staged copy is dropped, and it is reported ``reappeared``."""
    await backup(mongo_uri, tmp_path, database=seeded)
    writer = MongoClient(mongo_uri)

    def app_writes(event: mongosnap.Progress) -> None:
        if event.stage is mongosnap.Stage.STARTED and event.collection == "apps":
            writer[other_database].users.insert_one({"written": "by the application"})

    try:
        result = await restore(
            mongo_uri, tmp_path, database=seeded, to_database=other_database, progress=app_writes
        )
        status = {c.name: c.status for c in result.collections}
        assert status == {"apps": "restored", "users": "reappeared", "empty": "restored"}
        users = list(writer[other_database].users.find({}, {"_id": 0}))
        assert users == [{"written": "by the application"}]
        left = [n for n in writer[other_database].list_collection_names() if "tmp" in n]
        assert left == []
    finally:
        writer.close()


class _CountedReads(mongosnap.LocalStorage):
    """A real directory storage that records its ranged reads; ``fail_wide``
    makes a read spanning more than one collection fail as a transport error
    would."""

    def __init__(self, root: Path, fail_wide: int = 0) -> None:
        super().__init__(root)
        self.ranges: list[tuple[int, int | None]] = []
        self.fail_wide = fail_wide

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        self.ranges.append((start, end))
        if self.fail_wide and end is not None and end - start >= self.fail_wide:
            raise mongosnap.StorageError(f"{key}: connection reset (injected)")
        async for chunk in super().read(key, start, end):
            yield chunk


def _collection_ranges(tmp_path: Path) -> dict[str, tuple[int, int]]:
    (sidecar,) = tmp_path.glob("*.manifest.json")
    manifest = json.loads(sidecar.read_text())
    return {
        c["name"]: (c["metadata"]["offset"], (c["bson"] or c["metadata"])["end"])
        for c in manifest["collections"]
    }


async def test_adjacent_small_collections_share_one_read(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    """Small collections next to each other in the archive come from one
    ranged read (an S3 GET costs more than a small collection's insert),
    which reads no byte more than their own reads would."""
    await backup(mongo_uri, tmp_path, database=seeded)
    ranges = _collection_ranges(tmp_path)
    storage = _CountedReads(tmp_path)
    result = await restore(mongo_uri, storage, database=seeded, to_database=other_database)
    assert [c.status for c in result.collections] == ["restored"] * len(SIZES)
    span = (min(a for a, _ in ranges.values()), max(b for _, b in ranges.values()))
    ranged = [r for r in storage.ranges if r != (0, None)]
    assert span in ranged and len(ranged) == 2, storage.ranges  # the manifest member, the window
    assert_restored_as_seeded(mongo_uri, seeded, other_database)


async def test_a_failed_shared_read_falls_back_to_each_collections_own(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    """If the read shared by several collections fails, each reads its own
    range: one collection's failure is never another's."""
    await backup(mongo_uri, tmp_path, database=seeded)
    ranges = _collection_ranges(tmp_path)
    widest = max(b - a for a, b in ranges.values())
    storage = _CountedReads(tmp_path, fail_wide=widest + 1)
    result = await restore(mongo_uri, storage, database=seeded, to_database=other_database)
    assert [c.status for c in result.collections] == ["restored"] * len(SIZES)
    assert set(ranges.values()) <= set(storage.ranges), storage.ranges
    assert any(end is not None and end - start > widest for start, end in storage.ranges)
    assert_restored_as_seeded(mongo_uri, seeded, other_database)
