"""A collection dropped while a backup runs is recorded as vanished, never as an
empty (or partial) snapshot; heal then takes it from an older archive."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
from helpers import CommandLog, Destination, seed, server_documents, split_bson, tar_members
from pymongo import AsyncMongoClient, MongoClient
from test_mongo_tools import mongorestore_copy

from mongosnap import MemoryStorage, backup, heal, verify
from mongosnap._errors import CorruptArchive
from mongosnap.archive import ArchiveWriter
from mongosnap.archive.manifest import CollectionEntry, Manifest, manifest_key
from mongosnap.codecs import get_codec
from mongosnap.progress import Progress, Stage

VICTIM = 2500


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    """``a_first`` (dumped before the victim), ``b_victim``, ``c_empty`` (empty)."""
    seed(mongo_uri, new_database, {"a_first": 50, "b_victim": VICTIM, "c_empty": 0})
    return new_database


def dropper(uri: str, database: str, name: str, when: Stage, of: str) -> Any:
    """A progress callback that drops ``name`` the first time ``of`` reports ``when``."""
    done: list[Progress] = []

    def callback(event: Progress) -> None:
        if not done and event.stage is when and event.collection == of:
            done.append(event)
            with MongoClient(uri) as client:
                client[database].drop_collection(name)

    callback.fired = done  # type: ignore[attr-defined]
    return callback


def stored(dest: Destination, key: str) -> bytes:
    """An object's bytes by its key in the storage (S3 destinations add a prefix)."""
    return dest.get(f"nightly/{key}" if dest.bucket else key)


def manifest_of(dest: Destination, key: str) -> Manifest:
    return Manifest.from_json(stored(dest, manifest_key(key)))


def entry(manifest: Manifest, name: str) -> Any:
    return next(e for e in manifest.collections if e.name == name)


async def test_dropped_before_its_turn_is_vanished_not_empty(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    """Dropped once a_first is dumped, while their group waits for its check:
    vanished, with what was read of it ahead under gone/ (docs/format.md)."""
    progress = dropper(mongo_uri, seeded, "b_victim", Stage.DONE, "a_first")
    result = await backup(
        mongo_uri, destination.url, database=seeded, s3=destination.s3, progress=progress
    )
    assert progress.fired
    manifest = manifest_of(destination, result.archive_key)
    victim = entry(manifest, "b_victim")
    assert victim.status == "vanished"
    assert victim.metadata.name == f"gone/{seeded}/b_victim.metadata.json"
    read = b""
    if victim.bson is not None:
        assert victim.bson.name == f"gone/{seeded}/b_victim.bson"
        read = tar_members(stored(destination, result.archive_key))[victim.bson.name]
    assert len(split_bson(read)) == victim.documents <= VICTIM
    empty = entry(manifest, "c_empty")
    assert (empty.status, empty.documents) == ("complete", 0)
    assert empty.bson is not None and empty.bson.name == f"dump/{seeded}/c_empty.bson"
    assert entry(manifest, "a_first").status == "complete"
    members = tar_members(stored(destination, result.archive_key))
    assert not [m for m in members if m.startswith(f"dump/{seeded}/b_victim")]
    assert f"dump/{seeded}/c_empty.bson" in members
    assert [c.status for c in result.collections] == ["complete", "vanished", "complete"]
    report = await verify(destination.url, result.archive_key, s3=destination.s3)
    assert report.ok, report.problems


async def test_dropped_during_its_dump_is_vanished(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    progress = dropper(mongo_uri, seeded, "b_victim", Stage.BATCH, "b_victim")
    result = await backup(
        mongo_uri,
        destination.url,
        database=seeded,
        s3=destination.s3,
        batch_size=100,
        progress=progress,
    )
    assert progress.fired
    manifest = manifest_of(destination, result.archive_key)
    victim = entry(manifest, "b_victim")
    assert victim.status == "vanished"
    assert 0 < victim.documents < VICTIM
    assert victim.bson is not None and victim.bson.name == f"gone/{seeded}/b_victim.bson"
    members = tar_members(stored(destination, result.archive_key))
    assert not [m for m in members if m.startswith(f"dump/{seeded}/b_victim")]
    assert len(members[f"gone/{seeded}/b_victim.bson"]) == victim.bson_bytes
    report = await verify(destination.url, result.archive_key, s3=destination.s3)
    assert report.ok, report.problems
    assert [c.name for c in report.collections] == ["a_first", "c_empty"]


async def test_heal_skips_a_vanished_copy_for_the_older_archive(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    original = server_documents(mongo_uri, seeded, "b_victim")
    assert len(original) == VICTIM
    older = await backup(mongo_uri, destination.url, database=seeded, s3=destination.s3)
    progress = dropper(mongo_uri, seeded, "b_victim", Stage.BATCH, "b_victim")
    newer = await backup(
        mongo_uri,
        destination.url,
        database=seeded,
        s3=destination.s3,
        batch_size=200,
        progress=progress,
    )
    assert entry(manifest_of(destination, newer.archive_key), "b_victim").status == "vanished"
    with MongoClient(mongo_uri) as client:
        client[seeded].drop_collection("c_empty")  # genuinely empty: comes back empty

    report = await heal(
        mongo_uri,
        destination.url,
        database=seeded,
        collections=["a_first", "b_victim", "c_empty"],
        s3=destination.s3,
    )

    assert report.ok and report.missing == []
    sources = {o.name: (o.archive, o.documents) for o in report.restored}
    assert sources == {
        "b_victim": (older.archive_key, VICTIM),
        "c_empty": (newer.archive_key, 0),
    }
    assert sorted(server_documents(mongo_uri, seeded, "b_victim")) == sorted(original)
    with MongoClient(mongo_uri) as client:
        assert "c_empty" in client[seeded].list_collection_names()


async def test_mongorestore_never_sees_a_vanished_collection(
    tmp_path: Path, mongo_uri: str, seeded: str
) -> None:
    dest = tmp_path / "backups"
    progress = dropper(mongo_uri, seeded, "b_victim", Stage.BATCH, "b_victim")
    result = await backup(mongo_uri, str(dest), database=seeded, batch_size=100, progress=progress)
    with tarfile.open(dest / result.archive_key) as archive:
        archive.extractall(tmp_path / "x", filter="data")
    assert (tmp_path / "x" / "gone" / seeded / "b_victim.bson").exists()
    target = seeded + "_copy"
    try:
        mongorestore_copy(mongo_uri, tmp_path / "x" / "dump", seeded, target)
        assert server_documents(mongo_uri, target, "a_first") == server_documents(
            mongo_uri, seeded, "a_first"
        )
        with MongoClient(mongo_uri) as client:
            assert set(client[target].list_collection_names()) == {"a_first", "c_empty"}
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(target)


async def test_dropped_and_created_again_during_its_dump_is_vanished(
    tmp_path: Path, mongo_uri: str, seeded: str
) -> None:
    """Same name, another collection (another UUID): not a snapshot of either."""

    def replace(event: Progress) -> None:
        if event.stage is Stage.BATCH and event.collection == "b_victim" and not fired:
            fired.append(event)
            with MongoClient(mongo_uri) as client:
                client[seeded].drop_collection("b_victim")
                client[seeded].b_victim.insert_one({"new": True})

    fired: list[Progress] = []
    result = await backup(
        mongo_uri, str(tmp_path), database=seeded, batch_size=100, progress=replace
    )
    assert fired
    manifest = Manifest.from_json((tmp_path / manifest_key(result.archive_key)).read_bytes())
    assert entry(manifest, "b_victim").status == "vanished"


async def test_one_existence_check_per_group_of_collections(
    tmp_path: Path, mongo_uri: str, seeded: str
) -> None:
    """One listCollections checks the three collections after their dumps (and
    one plans, one checks the first turn); 200 collections:
    test_backup_vanished_groups.py."""
    listener = CommandLog()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, event_listeners=[listener])
    try:
        result = await backup(client, str(tmp_path), database=seeded)
    finally:
        await client.close()
    assert [c.status for c in result.collections] == ["complete"] * 3
    assert listener.filters() == [
        None,  # the plan
        {"name": "a_first"},  # a_first's turn
        {"name": {"$in": ["a_first", "b_victim", "c_empty"]}},  # the group, after c_empty
    ]


# ------------------------------------------------- the manifest field, no server


def sample_entry(status: str, root: str = "dump") -> dict[str, Any]:
    return {
        "database": "app",
        "name": "users",
        "type": "collection",
        "documents": 0,
        "bson_bytes": 0,
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "metadata": {"name": f"{root}/app/users.metadata.json", "offset": 0, "end": 10, "size": 5},
        "bson": {"name": f"{root}/app/users.bson", "offset": 10, "end": 20, "size": 0},
        "status": status,
    }


def test_status_key_absent_means_complete_and_is_only_written_when_not() -> None:
    raw = sample_entry("complete")
    del raw["status"]
    parsed = CollectionEntry.from_dict(raw, "c")
    assert parsed.status == "complete"
    assert "status" not in parsed.to_dict()
    assert CollectionEntry.from_dict(sample_entry("complete"), "c").status == "complete"
    vanished = CollectionEntry.from_dict(sample_entry("vanished", "gone"), "c")
    assert vanished.to_dict()["status"] == "vanished"
    assert CollectionEntry.from_dict(vanished.to_dict(), "c") == vanished


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (sample_entry("partial"), "unknown status"),
        (sample_entry(7), "status is not a string"),  # type: ignore[arg-type]
        (sample_entry("vanished"), "should be 'gone/app/users.metadata.json'"),
        (sample_entry("complete", "gone"), "should be 'dump/app/users.metadata.json'"),
        ({**sample_entry("complete"), "bson": None}, "data member should be"),
    ],
)
def test_status_is_checked(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(CorruptArchive, match=message):
        CollectionEntry.from_dict(raw, "c")


def test_vanished_before_its_turn_has_no_data() -> None:
    raw = {**sample_entry("vanished", "gone"), "bson": None}
    assert CollectionEntry.from_dict(raw, "c").bson is None
    with pytest.raises(CorruptArchive, match="vanished before its dump has no data"):
        CollectionEntry.from_dict({**raw, "documents": 3}, "c")


async def test_writer_holds_headers_until_settled() -> None:
    storage = MemoryStorage()
    sink = storage.open_writer("a.tar")
    async with ArchiveWriter(sink, get_codec("none")) as writer:
        meta = await writer.add_file("dump/app/users.metadata.json", b"{}", hold=True)
        await writer.begin("dump/app/users.bson")
        await writer.write(b"\x05\x00\x00\x00\x00")
        data = await writer.end(hold=True)
        with pytest.raises(RuntimeError, match="held"):
            writer.plan_finish(0)
        with pytest.raises(ValueError, match="cannot replace"):
            await writer.settle(meta, "gone/app/" + "u" * 100 + ".metadata.json")
    sink = storage.open_writer("b.tar")
    async with ArchiveWriter(sink, get_codec("none")) as writer:
        meta = await writer.add_file("dump/app/users.metadata.json", b"{}", hold=True)
        await writer.begin("dump/app/users.bson")
        await writer.write(b"\x05\x00\x00\x00\x00")
        data = await writer.end(hold=True)
        meta = await writer.settle(meta, "gone/app/users.metadata.json")
        data = await writer.settle(data, "gone/app/users.bson")
        plan, _ = writer.plan_finish(0)
        await writer.finish(b"")
    await sink.commit()
    members = tar_members(await storage.read_bytes("b.tar", limit=1 << 20), "r:")
    assert members == {
        "gone/app/users.metadata.json": b"{}",
        "gone/app/users.bson": b"\x05\x00\x00\x00\x00",
        "mongosnap/manifest.json": b"",
    }
    assert (meta.name, data.name, plan.offset) == (
        "gone/app/users.metadata.json",
        "gone/app/users.bson",
        data.end,
    )
