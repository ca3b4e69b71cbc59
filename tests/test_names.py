"""Collection names the staging rename cannot take as they are: dots and the longest names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import Destination, sample_document, server_documents
from pymongo import ASCENDING, MongoClient
from pymongo.errors import OperationFailure

from mongosnap import backup, heal, restore
from mongosnap.pipelines import staging
from mongosnap.pipelines.staging import TEMP_PREFIX, is_temp_of, temp_name

DOTTED = ["fs.files", "fs.chunks", "app.logs"]


def _fill(uri: str, database: str, names: list[str], count: int = 150) -> None:
    with MongoClient(uri) as client:
        for name in names:
            coll = client[database][name]
            coll.insert_many([sample_document(i) for i in range(count)])
            coll.create_index([("i", ASCENDING)], name="by_i", unique=True)


def _state(uri: str, database: str, name: str) -> tuple[list[bytes], list[Any]]:
    with MongoClient(uri) as client:
        indexes = sorted(
            (ix["name"], dict(ix["key"])) for ix in client[database][name].list_indexes()
        )
    return sorted(server_documents(uri, database, name)), indexes


def _names(uri: str, database: str) -> set[str]:
    with MongoClient(uri) as client:
        return set(client[database].list_collection_names())


def _drop(uri: str, database: str, *names: str) -> None:
    with MongoClient(uri) as client:
        for name in names:
            client[database].drop_collection(name)


async def test_dotted_names_heal(
    destination: Destination, mongo_uri: str, new_database: str
) -> None:
    """FerretDB refuses renameCollection to a dotted name (code 73): the copy fallback."""
    _fill(mongo_uri, new_database, [*DOTTED, "plain"])
    before = {n: _state(mongo_uri, new_database, n) for n in DOTTED}
    await backup(mongo_uri, destination.url, database=new_database, s3=destination.s3)
    _drop(mongo_uri, new_database, *DOTTED)

    report = await heal(
        mongo_uri,
        destination.url,
        database=new_database,
        collections=[*DOTTED, "plain"],
        s3=destination.s3,
    )

    assert report.ok, report
    assert sorted((o.name, o.status) for o in report.restored) == sorted(
        (n, "restored") for n in DOTTED
    )
    assert [o.indexes for o in report.restored] == [1, 1, 1]
    for name in DOTTED:
        assert _state(mongo_uri, new_database, name) == before[name], name
    assert not [c for c in _names(mongo_uri, new_database) if c.startswith(TEMP_PREFIX)]


async def test_dotted_names_restore_and_replace(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _fill(mongo_uri, new_database, DOTTED)
    before = {n: _state(mongo_uri, new_database, n) for n in DOTTED}
    await backup(mongo_uri, tmp_path, database=new_database)
    with MongoClient(mongo_uri) as client:
        client[new_database]["app.logs"].insert_one({"after": "backup"})

    result = await restore(mongo_uri, tmp_path, database=new_database, drop=True)

    assert sorted((c.name, c.status) for c in result.collections) == sorted(
        (n, "restored") for n in DOTTED
    )
    for name in DOTTED:
        assert _state(mongo_uri, new_database, name) == before[name], name
    assert not [c for c in _names(mongo_uri, new_database) if c.startswith(TEMP_PREFIX)]


def _longest_name(uri: str, database: str) -> int:
    """The longest collection name this server creates in ``database`` (binary search)."""
    low, high = 1, 1024
    with MongoClient(uri) as client:
        while low < high:
            middle = (low + high + 1) // 2
            try:
                client[database].create_collection("n" * middle)
            except OperationFailure:
                high = middle - 1
            else:
                client[database].drop_collection("n" * middle)
                low = middle
    return low


async def test_the_longest_name_heals_and_restores(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    longest = _longest_name(mongo_uri, new_database)
    assert longest >= 200  # FerretDB 1.24 accepts 235 characters
    name = "L" * longest
    _fill(mongo_uri, new_database, [name], count=40)
    before = _state(mongo_uri, new_database, name)
    await backup(mongo_uri, tmp_path, database=new_database)
    _drop(mongo_uri, new_database, name)

    report = await heal(mongo_uri, tmp_path, database=new_database, collections=[name])

    assert report.ok, report
    assert _state(mongo_uri, new_database, name) == before
    _drop(mongo_uri, new_database, name)
    result = await restore(mongo_uri, tmp_path, database=new_database)
    assert [c.status for c in result.collections] == ["restored"]
    assert _state(mongo_uri, new_database, name) == before


def test_staging_names_fit_and_recognise_their_collection() -> None:
    long = "x" * 230
    staged = temp_name(long)
    assert len(staged) == len(temp_name("a")) == 37
    assert "." not in temp_name("fs.files")
    assert is_temp_of(staged, long)
    assert not is_temp_of(staged, "x" * 229)
    assert is_temp_of(f"{TEMP_PREFIX}0123abcd_app.logs", "app.logs")  # an older run's name


async def test_a_killed_runs_long_staging_copy_is_dropped(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    name = "k" * 200
    _fill(mongo_uri, new_database, [name], count=20)
    await backup(mongo_uri, tmp_path, database=new_database)
    _drop(mongo_uri, new_database, name)
    stale = temp_name(name)
    with MongoClient(mongo_uri) as client:  # what kill -9 leaves
        client[new_database][stale].insert_one({"partial": True})

    report = await heal(mongo_uri, tmp_path, database=new_database, collections=[name])

    assert report.ok
    assert stale not in _names(mongo_uri, new_database)


async def test_a_dotted_name_recreated_meanwhile_is_never_clobbered(
    mongo_uri: str, new_database: str, tmp_path: Path, monkeypatch: Any
) -> None:
    _fill(mongo_uri, new_database, ["app.logs"], count=30)
    await backup(mongo_uri, tmp_path, database=new_database)
    _drop(mongo_uri, new_database, "app.logs")
    real_finish = staging.StagedCollection.finish

    async def app_recreates_it(self: Any, *args: Any) -> None:
        await real_finish(self, *args)
        with MongoClient(mongo_uri) as client:  # the application writes meanwhile
            client[new_database]["app.logs"].insert_one({"written": "by the application"})

    monkeypatch.setattr(staging.StagedCollection, "finish", app_recreates_it)
    report = await heal(mongo_uri, tmp_path, database=new_database, collections=["app.logs"])

    assert [o.status for o in report.restored] == ["reappeared"]
    with MongoClient(mongo_uri) as client:
        docs = list(client[new_database]["app.logs"].find({}, {"_id": 0}))
    assert docs == [{"written": "by the application"}]
    assert not [c for c in _names(mongo_uri, new_database) if c.startswith(TEMP_PREFIX)]
