"""Existence checks in groups (docs/format.md section 3): one listCollections
checks up to GROUP_COLLECTIONS consecutive collections of a database after
their dumps; a collection dropped, or dropped and created again, in the middle
of a group is vanished while its neighbours are complete and restore byte for
byte; a large collection closes its group, so the unfilled headers a storage
must hold back stay within GROUP_BYTES of each other."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from helpers import CommandLog, seed, server_documents, split_bson, tar_members
from pymongo import AsyncMongoClient, MongoClient
from test_backup_vanished import dropper
from test_mongo_tools import mongorestore_copy

from mongosnap import LocalStorage, backup, verify
from mongosnap._errors import SourceError
from mongosnap.archive.manifest import Manifest, manifest_key
from mongosnap.pipelines import backup as backup_module
from mongosnap.progress import Progress, Stage
from mongosnap.source import Source
from mongosnap.storage import local


async def listened_backup(uri: str, destination: Any, database: str, **options: Any) -> Any:
    """A backup through a client that records its listCollections filters."""
    listener = CommandLog()
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri, event_listeners=[listener])
    try:
        result = await backup(client, destination, database=database, **options)
    finally:
        await client.close()
    return result, listener.filters()


def of(names: list[str]) -> dict[str, Any]:
    return {"name": {"$in": names}}


def seed_large(uri: str, database: str, name: str) -> None:
    """About 5 MB that does not compress: more than GROUP_BYTES in the archive."""
    with MongoClient(uri) as client:
        client[database][name].insert_many([{"i": i, "r": os.urandom(1000)} for i in range(5000)])


async def test_one_listcollections_per_group_of_collections(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    """200 small collections: 4 group checks and the first turn, not 200."""
    names = [f"c{i:03d}" for i in range(200)]
    seed(mongo_uri, new_database, dict.fromkeys(names, 2))
    result, filters = await listened_backup(mongo_uri, str(tmp_path), new_database)
    assert [c.status for c in result.collections] == ["complete"] * 200
    assert backup_module.GROUP_COLLECTIONS == 64
    assert (
        filters
        == [
            None,  # the plan
            {"name": "c000"},  # the first turn
            of(names[0:65]),  # the first group, and c064's turn
            of(names[64:129]),
            of(names[128:193]),
            of(names[192:200]),
        ]
    )


async def test_dropped_and_replaced_in_the_middle_of_a_group(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    """c2 dropped, c4 dropped and created again, each once dumped, while their
    group waits for its check: both vanished, what was read of them under
    gone/; c0, c1, c3, c5 of the same group complete, and mongorestore of the
    extracted archive gives back exactly their documents."""
    names = [f"c{i}" for i in range(6)]
    seed(mongo_uri, new_database, dict.fromkeys(names, 30))
    original = {n: server_documents(mongo_uri, new_database, n) for n in names}
    fired: list[str] = []

    def meddle(event: Progress) -> None:
        if event.stage is not Stage.DONE or event.collection in fired:
            return
        with MongoClient(mongo_uri) as client:
            db = client[new_database]
            if event.collection == "c2":
                db.drop_collection("c2")
            elif event.collection == "c4":
                db.drop_collection("c4")
                db.c4.insert_one({"new": True})
            else:
                return
        fired.append(event.collection)

    result, filters = await listened_backup(mongo_uri, str(tmp_path), new_database, progress=meddle)
    assert fired == ["c2", "c4"]
    assert filters == [None, {"name": "c0"}, of(names)]  # one group: all six
    statuses = {c.name: c.status for c in result.collections}
    assert statuses == {n: "vanished" if n in ("c2", "c4") else "complete" for n in names}

    manifest = Manifest.from_json((tmp_path / manifest_key(result.archive_key)).read_bytes())
    members = tar_members((tmp_path / result.archive_key).read_bytes())
    for entry in manifest.collections:
        root = "gone" if entry.name in ("c2", "c4") else "dump"
        assert entry.metadata.name == f"{root}/{new_database}/{entry.name}.metadata.json"
        assert entry.bson is not None  # each one read whole before its drop
        assert entry.bson.name == f"{root}/{new_database}/{entry.name}.bson"
        assert split_bson(members[entry.bson.name]) == original[entry.name]
        assert entry.documents == len(original[entry.name])
    gone = (f"dump/{new_database}/c2.", f"dump/{new_database}/c4.")
    assert not [m for m in members if m.startswith(gone)]
    report = await verify(str(tmp_path), result.archive_key)
    assert report.ok, report.problems

    with tarfile.open(tmp_path / result.archive_key) as archive:
        archive.extractall(tmp_path / "x", filter="data")
    target = new_database + "_copy"
    try:
        mongorestore_copy(mongo_uri, tmp_path / "x" / "dump", new_database, target)
        with MongoClient(mongo_uri) as client:
            assert set(client[target].list_collection_names()) == {"c0", "c1", "c3", "c5"}
        for name in ("c0", "c1", "c3", "c5"):
            assert server_documents(mongo_uri, target, name) == original[name]
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(target)


class SpanRecorder(local._LocalWriter):
    """A real local writer that remembers how far apart its unfilled headers get."""

    peak = 0

    async def _append(self, offset: int, data: bytes) -> None:
        await super()._append(offset, data)
        held = self._reservations
        if held:
            span = max(o + n for o, n in held.items()) - min(held)
            SpanRecorder.peak = max(SpanRecorder.peak, span)


class RecordingStorage(LocalStorage):
    def open_writer(self, key: str) -> local._LocalWriter:
        return SpanRecorder(self, key)


async def test_a_large_collection_closes_its_group(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    """a_s0, b_big, c_s1, d_s2: the group [a_s0, b_big] is checked once b_big's megabytes are
    written, so no header waits across them (an S3 writer holds back the parts
    that hold unfilled headers: within GROUP_BYTES, at most two)."""
    seed(mongo_uri, new_database, {"a_s0": 20})
    seed_large(mongo_uri, new_database, "b_big")
    seed(mongo_uri, new_database, {"c_s1": 20, "d_s2": 20})
    SpanRecorder.peak = 0
    result, filters = await listened_backup(mongo_uri, RecordingStorage(tmp_path), new_database)
    assert [(c.name, c.status) for c in result.collections] == [
        ("a_s0", "complete"),
        ("b_big", "complete"),
        ("c_s1", "complete"),
        ("d_s2", "complete"),
    ]
    assert filters == [None, {"name": "a_s0"}, of(["a_s0", "b_big", "c_s1"]), of(["c_s1", "d_s2"])]
    assert 0 < SpanRecorder.peak < backup_module.GROUP_BYTES
    members = tar_members((tmp_path / result.archive_key).read_bytes())
    for name in ("a_s0", "b_big", "c_s1", "d_s2"):
        data = members[f"dump/{new_database}/{name}.bson"]
        assert split_bson(data) == server_documents(mongo_uri, new_database, name)


async def test_dropped_at_its_turn_after_a_group_check_has_no_data(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    """The check that closes a group answers for the next collection's turn: s1,
    dropped once big is written, gets only its gone/ metadata, and what was read
    of it ahead is discarded."""
    seed_large(mongo_uri, new_database, "big")
    seed(mongo_uri, new_database, {"s1": 300, "s2": 20})
    drop_s1 = dropper(mongo_uri, new_database, "s1", Stage.DONE, "big")
    result, filters = await listened_backup(
        mongo_uri, str(tmp_path), new_database, batch_size=50, progress=drop_s1
    )
    assert drop_s1.fired
    assert filters[:3] == [None, {"name": "big"}, of(["big", "s1"])]
    manifest = Manifest.from_json((tmp_path / manifest_key(result.archive_key)).read_bytes())
    victim = next(e for e in manifest.collections if e.name == "s1")
    assert (victim.status, victim.bson, victim.documents) == ("vanished", None, 0)
    assert victim.metadata.name == f"gone/{new_database}/s1.metadata.json"
    assert [c.status for c in result.collections] == ["complete", "vanished", "complete"]
    members = tar_members((tmp_path / result.archive_key).read_bytes())
    assert not [m for m in members if "/s1." in m and not m.endswith("s1.metadata.json")]


@pytest.mark.parametrize("next_database", [False, True])
async def test_a_group_closes_after_a_last_collection_gone_at_listindexes(
    tmp_path: Path,
    mongo_uri: str,
    new_database: str,
    monkeypatch: pytest.MonkeyPatch,
    next_database: bool,
) -> None:
    """c2, the last collection of its database, is dropped and its listIndexes
    fails: recorded vanished with metadata only, and the group [c0, c1] waiting
    for its check is still checked (complete), before the next database's."""
    seed(mongo_uri, new_database, {"c0": 20, "c1": 20, "c2": 20})
    other = new_database + "_b"
    databases = [new_database, other] if next_database else [new_database]
    if next_database:
        seed(mongo_uri, other, {"d0": 20})
    real = Source.indexes

    async def failing(self: Source, database: str, collection: str) -> list[dict[str, Any]]:
        if collection == "c2":
            with MongoClient(mongo_uri) as client:
                client[database].drop_collection("c2")
            raise SourceError("injected listIndexes failure")
        return await real(self, database, collection)

    monkeypatch.setattr(Source, "indexes", failing)
    try:
        result = await backup(mongo_uri, str(tmp_path), database=databases)
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(other)
    expected = [("c0", "complete"), ("c1", "complete"), ("c2", "vanished")]
    assert [(c.name, c.status) for c in result.collections] == expected + (
        [("d0", "complete")] if next_database else []
    )
    manifest = Manifest.from_json((tmp_path / manifest_key(result.archive_key)).read_bytes())
    victim = next(e for e in manifest.collections if e.name == "c2")
    assert (victim.bson, victim.metadata.name) == (None, f"gone/{new_database}/c2.metadata.json")
    report = await verify(str(tmp_path), result.archive_key)
    assert report.ok, report.problems
