"""Backups of a real FerretDB database into a directory and both real S3 servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import bson as bson_module
import pytest
from helpers import Destination, seed, server_documents, split_bson, tar_members
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient, MongoClient

import mongosnap
from mongosnap import backup
from mongosnap.archive.manifest import Manifest, manifest_key
from mongosnap.progress import Stage

SIZES = {"users": 700, "orders": 1500, "empty": 0, "tiny": 1}


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    return new_database


def _archive_key(dest: Destination, result: mongosnap.BackupReport) -> str:
    return f"nightly/{result.archive_key}" if dest.bucket else result.archive_key


async def test_backup_is_byte_identical_and_complete(
    destination: Destination, mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    events: list[Any] = []
    result = await backup(
        mongo_uri, destination.url, database=seeded, s3=destination.s3, progress=events.append
    )

    assert result.archive_key.endswith("-mongodb-dump.tar.gz")
    assert {c.name: c.documents for c in result.collections} == SIZES
    assert {e.stage for e in events} == {Stage.PLANNED, Stage.STARTED, Stage.BATCH, Stage.DONE}
    key = _archive_key(destination, result)
    assert sorted(destination.keys()) == sorted([key, manifest_key(key)])
    assert destination.pending_uploads() == []

    archive = destination.get(key)
    assert len(archive) == result.bytes_out
    members = tar_members(archive)
    manifest = Manifest.from_json(members["mongosnap/manifest.json"])
    assert destination.get(manifest_key(key)) == members["mongosnap/manifest.json"]

    for name, count in SIZES.items():
        bson = members[f"dump/{seeded}/{name}.bson"]
        expected = server_documents(mongo_uri, seeded, name)
        assert sorted(split_bson(bson)) == sorted(expected)  # byte for byte
        assert len(expected) == count
        entry = next(c for c in manifest.collections if c.name == name)
        assert entry.sha256 == hashlib.sha256(bson).hexdigest()
        assert entry.bson_bytes == len(bson)
        meta = json.loads(members[f"dump/{seeded}/{name}.metadata.json"])
        assert meta["collectionName"] == name
        assert meta["type"] == "collection"
        assert isinstance(meta["indexes"], list)

    users_meta = json.loads(members[f"dump/{seeded}/users.metadata.json"])
    assert {ix["name"] for ix in users_meta["indexes"]} == {"_id_", "by_i", "s_when"}

    # GNU tar reads the archive as it is, with the same bytes.
    path = tmp_path / "a.tar.gz"
    path.write_bytes(archive)
    listing = subprocess.run(["tar", "-tzvf", str(path)], check=True, capture_output=True)
    assert f"dump/{seeded}/orders.bson".encode() in listing.stdout
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(path), "-C", str(out)], check=True)
    for name in SIZES:
        on_disk = (out / "dump" / seeded / f"{name}.bson").read_bytes()
        assert on_disk == members[f"dump/{seeded}/{name}.bson"]


async def test_each_collection_can_be_fetched_alone_by_range(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    result = await backup(mongo_uri, destination.url, database=seeded, s3=destination.s3)
    key = _archive_key(destination, result)
    manifest = Manifest.from_json(destination.get(manifest_key(key)))
    for entry in manifest.collections:
        assert entry.metadata is not None and entry.bson is not None
        start, end = entry.metadata.offset, entry.bson.end
        piece = destination.get_range(key, start, end)
        members = tar_members(piece + _end_of_archive(result.codec), mode="r:*")
        bson = members[f"dump/{seeded}/{entry.name}.bson"]
        assert hashlib.sha256(bson).hexdigest() == entry.sha256


def _end_of_archive(codec: str) -> bytes:
    from mongosnap.codecs import get_codec

    return get_codec(codec).compress(b"\0" * 1024)


async def test_zstd_archive_is_read_by_gnu_tar(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    result = await backup(mongo_uri, tmp_path / "b", database=seeded, codec="zstd")
    assert result.archive_key.endswith("-mongodb-dump.tar.zst")
    out = tmp_path / "x"
    out.mkdir()
    archive = tmp_path / "b" / result.archive_key
    subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(out)], check=True)
    for name in SIZES:
        data = (out / "dump" / seeded / f"{name}.bson").read_bytes()
        assert sorted(split_bson(data)) == sorted(server_documents(mongo_uri, seeded, name))


@pytest.mark.parametrize("kind", ["pymongo", "motor"])
async def test_user_clients_are_accepted(
    kind: str, mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    client: Any = (
        AsyncMongoClient(mongo_uri) if kind == "pymongo" else AsyncIOMotorClient(mongo_uri)
    )
    try:
        result = await backup(client, tmp_path, database=seeded)
        assert {c.name: c.documents for c in result.collections} == SIZES
        await client[seeded].command("ping")  # the user's client stays open
    finally:
        close = client.close()
        if asyncio.iscoroutine(close):
            await close


async def test_two_backups_in_one_second_do_not_collide(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    first, second = await asyncio.gather(
        backup(mongo_uri, tmp_path, database=seeded, include=["tiny"]),
        backup(mongo_uri, tmp_path, database=seeded, include=["tiny"]),
    )
    assert first.archive_key != second.archive_key
    assert sorted([first.archive_key, second.archive_key]) == sorted(
        p.name for p in tmp_path.glob("*.tar.gz")
    )


async def test_include_exclude_and_several_databases(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    other = f"{seeded}_other"
    seed(mongo_uri, other, {"things": 5})
    try:
        result = await backup(
            mongo_uri, tmp_path, database=[seeded, other, seeded], include=["users", "things"]
        )
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(other)
    assert sorted((c.database, c.name) for c in result.collections) == sorted(
        [(seeded, "users"), (other, "things")]
    )
    result = await backup(mongo_uri, tmp_path, database=seeded, exclude=["o*", "empty"])
    assert sorted(c.name for c in result.collections) == ["tiny", "users"]


async def test_all_databases(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    result = await backup(mongo_uri, tmp_path, database=None)
    assert seeded in {c.database for c in result.collections}
    assert not {"admin", "local", "config"} & {c.database for c in result.collections}


async def test_writes_during_the_dump_do_not_corrupt_the_archive(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    with MongoClient(mongo_uri) as client:
        client[new_database].live.insert_many([{"n": n, "pad": "x" * 500} for n in range(6000)])
    stop = threading.Event()
    written = [0]

    def application() -> None:
        with MongoClient(mongo_uri) as client:
            coll = client[new_database].live
            while not stop.is_set():
                coll.insert_one({"n": -1, "pad": "y" * 900})
                coll.delete_one({"n": written[0]})
                written[0] += 1

    writer = threading.Thread(target=application)
    writer.start()
    try:
        result = await backup(mongo_uri, tmp_path, database=new_database, batch_size=100)
    finally:
        stop.set()
        writer.join()
    assert written[0] > 0, "the application must have written during the dump"

    archive = (tmp_path / result.archive_key).read_bytes()
    subprocess.run(["tar", "-tzf", "-"], input=archive, check=True, capture_output=True)
    members = tar_members(archive)
    bson = members[f"dump/{new_database}/live.bson"]
    manifest = Manifest.from_json(members["mongosnap/manifest.json"])
    (entry,) = manifest.collections
    assert entry.bson_bytes == len(bson)
    assert entry.sha256 == hashlib.sha256(bson).hexdigest()
    documents = split_bson(bson)
    assert len(documents) == entry.documents
    assert all(bson_module.decode(d)["pad"] for d in documents)  # each one whole


def test_a_backup_to_a_directory_loads_no_s3_client(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    """aiobotocore and botocore cost more CPU to import than a small backup to a
    directory costs to run: they are loaded for s3:// destinations only."""
    code = (
        "import sys\n"
        "from mongosnap.cli import main\n"
        f"code = main(['backup', {str(tmp_path)!r}, '--uri', {mongo_uri!r}, {seeded!r}, '-q'])\n"
        "heavy = {'aiobotocore', 'botocore', 'aiohttp'}\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & heavy), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stderr.strip() == "0 []"
    assert len(list(tmp_path.glob("*.tar.gz"))) == 1
