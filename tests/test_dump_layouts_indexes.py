"""Dump layouts other than one metadata file and one BSON file per collection.

Each archive is a ``tar -czf dump`` of a dump directory laid out as mongodump
writes it (older mongodumps: ``system.indexes.bson`` and no metadata files;
mongodump 5+/7: a time-series collection as ``system.buckets.NAME.bson`` plus
``NAME.metadata.json``). The real mongorestore is run on the same directory
beside mongosnap, and what it does is asserted too, so the comparison stays
true (docs/format.md, "Archives mongosnap reads").
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import ObjectId
from helpers import run_cli, server_documents, split_bson
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError
from testbed import mongo_tools_dir

import mongosnap
from mongosnap.pipelines.staging import TEMP_PREFIX

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from fakewire import FakeServer

ARCHIVE = "2020-01-01-00-00-00-mongodb-dump.tar.gz"
PARTIAL = mongosnap.PartialFailure.exit_code


def _docs(tag: str, count: int) -> list[bytes]:
    return [
        bson.encode({"_id": i, "tag": tag, "email": f"{tag}{i}@x", "n": i}) for i in range(count)
    ]


def _write_dump(root: Path, database: str, files: dict[str, bytes]) -> Path:
    """``files`` (names under dump/DATABASE/) as the legacy script's ``tar -czf``
    of a dump directory, in ROOT/store; returns the store."""
    store = root / "store"
    store.mkdir()
    with tarfile.open(store / ARCHIVE, "w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(f"dump/{database}/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return store


def _metadata(name: str, indexes: list[dict[str, Any]], **options: Any) -> bytes:
    """A metadata file as mongodump 100.x writes it (canonical Extended JSON)."""
    doc: dict[str, Any] = {}
    if options:
        doc["options"] = options
    doc |= {"indexes": indexes, "uuid": "0123456789abcdef0123456789abcdef"}
    doc |= {
        "collectionName": name,
        "type": "timeseries" if "timeseries" in options else "collection",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _host(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def _mongorestore(
    uri: str, root: Path, database: str, files: dict[str, bytes], *flags: str
) -> subprocess.CompletedProcess[str]:
    """The real mongorestore of ``files`` as dump directory ROOT/dump/DATABASE,
    not renamed (its ``--nsTo`` would lose system.indexes' specs)."""
    dump = root / "dump"
    (dump / database).mkdir(parents=True)
    for name, body in files.items():
        (dump / database / name).write_bytes(body)
    return subprocess.run(
        [str(mongo_tools_dir() / "mongorestore"), "--host", _host(uri), "--dir", str(dump), *flags],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _names(uri: str, database: str) -> list[str]:
    with MongoClient(uri) as client:
        return sorted(client[database].list_collection_names())


def _indexes(uri: str, database: str, name: str) -> dict[str, dict[str, Any]]:
    with MongoClient(uri) as client:
        return {ix["name"]: dict(ix["key"]) for ix in client[database][name].list_indexes()}


def _restore_cli(uri: str, store: Path, database: str) -> subprocess.CompletedProcess[str]:
    return run_cli("restore", "latest", str(store), _host(uri), database)


# -- 1. system.indexes.bson (mongodump before 3.0: no metadata files)


def _system_indexes(database: str) -> bytes:
    specs = [
        {"v": 1, "key": {"_id": 1}, "name": "_id_", "ns": f"{database}.users"},
        {"v": 1, "key": {"email": 1.0}, "name": "email_1", "ns": f"{database}.users",
         "unique": True},
        {"v": 1, "key": {"n": -1.0, "tag": 1}, "name": "n_-1_tag_1", "ns": f"{database}.users"},
        {"v": 1, "key": {"_id": 1}, "name": "_id_", "ns": f"{database}.orders"},
        {"v": 1, "key": {"n": "1"}, "name": "n_1", "ns": f"{database}.orders", "background": True},
    ]  # fmt: skip
    return b"".join(bson.encode(s) for s in specs)


@pytest.fixture
def old_dump(tmp_path: Path, new_database: str) -> tuple[Path, dict[str, list[bytes]]]:
    documents = {"users": _docs("u", 40), "orders": _docs("o", 25)}
    return _write_dump(tmp_path, new_database, _old_files(new_database, documents)), documents


def _old_files(database: str, documents: dict[str, list[bytes]]) -> dict[str, bytes]:
    files = {f"{n}.bson": b"".join(d) for n, d in documents.items()}
    files["system.indexes.bson"] = _system_indexes(database)
    return files


EXPECTED_INDEXES = {
    "users": {"_id_": {"_id": 1}, "email_1": {"email": 1}, "n_-1_tag_1": {"n": -1, "tag": 1}},
    "orders": {"_id_": {"_id": 1}, "n_1": {"n": 1}},
}


def test_system_indexes_builds_indexes_never_a_collection(
    mongo_uri: str,
    new_database: str,
    old_dump: tuple[Path, dict[str, list[bytes]]],
    tmp_path: Path,
) -> None:
    store, documents = old_dump
    done = _restore_cli(mongo_uri, store, new_database)
    assert done.returncode == 0, done.stderr
    assert _names(mongo_uri, new_database) == ["orders", "users"]
    for name, docs in documents.items():
        assert sorted(server_documents(mongo_uri, new_database, name)) == sorted(docs)
        assert _indexes(mongo_uri, new_database, name) == EXPECTED_INDEXES[name], name
    with MongoClient(mongo_uri) as client, pytest.raises(DuplicateKeyError):
        client[new_database]["users"].insert_one({"email": "u1@x"})

    # mongorestore reads the same file as index specs, never as a collection; it
    # sends them with their ``ns`` and the key value "1" unconverted, which
    # FerretDB refuses, whichever collection's indexes it builds first.
    theirs = f"{new_database}_mr"
    try:
        ran = _mongorestore(mongo_uri, tmp_path, theirs, _old_files(theirs, documents))
        assert "system.indexes" not in _names(mongo_uri, theirs)
        assert sorted(server_documents(mongo_uri, theirs, "users")) == sorted(documents["users"])
        assert ran.returncode != 0 and "error creating indexes" in ran.stderr, ran.stderr
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(theirs)


async def test_heal_from_a_system_indexes_dump_builds_the_indexes(
    mongo_uri: str, new_database: str, old_dump: tuple[Path, dict[str, list[bytes]]]
) -> None:
    store, documents = old_dump
    report = await mongosnap.heal(mongo_uri, store, database=new_database, collections=["users"])
    assert report.ok, report
    assert _names(mongo_uri, new_database) == ["users"]
    assert sorted(server_documents(mongo_uri, new_database, "users")) == sorted(documents["users"])
    assert _indexes(mongo_uri, new_database, "users") == EXPECTED_INDEXES["users"]


def test_metadata_files_win_over_system_indexes(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    """With metadata files in the directory, system.indexes.bson is redundant (mongorestore)."""
    meta = _metadata("users", [{"v": 2, "key": {"tag": 1}, "name": "tag_1"}])
    files = {"users.bson": b"".join(_docs("u", 5)), "users.metadata.json": meta}
    files["orders.bson"] = b"".join(_docs("o", 5))
    files["system.indexes.bson"] = _system_indexes(new_database)
    _write_dump(tmp_path, new_database, files)
    done = _restore_cli(mongo_uri, tmp_path / "store", new_database)
    assert done.returncode == 0, done.stderr
    assert _names(mongo_uri, new_database) == ["orders", "users"]
    assert _indexes(mongo_uri, new_database, "users") == {"_id_": {"_id": 1}, "tag_1": {"tag": 1}}
    assert _indexes(mongo_uri, new_database, "orders") == {"_id_": {"_id": 1}}


# -- 2. a metadata file with no BSON file


def test_metadata_without_bson_creates_the_empty_collection(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    indexes = [
        {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        {"v": 2, "key": {"k": 1}, "name": "k_1"},
    ]
    files = {
        "empty.metadata.json": _metadata("empty", indexes, capped=True, size=4096),
        "full.bson": b"".join(_docs("f", 3)),
        "full.metadata.json": _metadata("full", []),
    }
    _write_dump(tmp_path, new_database, files)
    done = _restore_cli(mongo_uri, tmp_path / "store", new_database)
    assert done.returncode == 0, done.stderr
    assert "restored 2 collections" in done.stdout
    assert _names(mongo_uri, new_database) == ["empty", "full"]
    assert server_documents(mongo_uri, new_database, "empty") == []
    assert _indexes(mongo_uri, new_database, "empty") == {"_id_": {"_id": 1}, "k_1": {"k": 1}}
    with MongoClient(mongo_uri) as client:
        options = client[new_database]["empty"].options()
    assert options.get("capped") is True, options

    # mongorestore creates it too (without indexes here: FerretDB refuses their ``ns``).
    theirs = f"{new_database}_mr"
    try:
        ran = _mongorestore(mongo_uri, tmp_path, theirs, files, "--noIndexRestore")
        assert ran.returncode == 0, ran.stderr
        assert _names(mongo_uri, theirs) == ["empty", "full"]
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(theirs)

    # Heal: a watched collection that was empty when backed up comes back empty.
    with MongoClient(mongo_uri) as client:
        client[new_database].drop_collection("empty")
    done = run_cli("heal", str(tmp_path / "store"), _host(mongo_uri), new_database, "empty")
    assert done.returncode == 0, done.stderr
    assert _names(mongo_uri, new_database) == ["empty", "full"]
    assert _indexes(mongo_uri, new_database, "empty") == {"_id_": {"_id": 1}, "k_1": {"k": 1}}


# -- 3. an unreadable metadata file fails its collection only


def test_unreadable_metadata_fails_that_collection_only(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    good = _docs("g", 10)
    files = {
        "bad.bson": b"".join(_docs("b", 4)),
        "bad.metadata.json": b"",
        "good.bson": b"".join(good),
        "good.metadata.json": _metadata("good", []),
        "ugly.metadata.json": b'{"options": {"capped": tru',
        "ugly.bson": b"".join(_docs("x", 4)),
        "lonely.metadata.json": b"not json at all",
    }
    _write_dump(tmp_path, new_database, files)
    done = _restore_cli(mongo_uri, tmp_path / "store", new_database)
    assert done.returncode == PARTIAL == 42, done.stderr
    for name in ("bad", "ugly", "lonely"):
        assert f"{name}.metadata.json" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "restored 1 collection, 3 failed" in done.stdout, done.stdout
    assert _names(mongo_uri, new_database) == ["good"]
    assert sorted(server_documents(mongo_uri, new_database, "good")) == sorted(good)

    # mongorestore gives up on the whole dump at the first metadata file it cannot parse.
    theirs = f"{new_database}_mr"
    try:
        ran = _mongorestore(mongo_uri, tmp_path, theirs, files)
        assert ran.returncode != 0 and "error parsing metadata" in ran.stderr, ran.stderr
        assert _names(mongo_uri, theirs) == []
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(theirs)


# -- 4. time-series collections (mongodump 5+: system.buckets.NAME.bson)


def _buckets(count: int) -> list[bytes]:
    """Bucket documents as MongoDB 7 stores them (control/meta/data columns)."""
    out = []
    for b in range(count):
        times = [datetime(2026, 1, 1, b, m, tzinfo=UTC) for m in range(3)]
        ids = [ObjectId() for _ in times]
        out.append(
            bson.encode(
                {
                    "_id": ObjectId(),
                    "control": {
                        "version": 1,
                        "min": {"_id": min(ids), "t": times[0], "temp": 1.5},
                        "max": {"_id": max(ids), "t": times[-1], "temp": 3.5},
                    },
                    "meta": {"sensor": b},
                    "data": {
                        "_id": {str(i): v for i, v in enumerate(ids)},
                        "t": {str(i): v for i, v in enumerate(times)},
                        "temp": {str(i): 1.5 + i for i in range(len(times))},
                    },
                }
            )
        )
    return out


TIMESERIES = {
    "timeField": "t",
    "metaField": "meta",
    "granularity": "seconds",
    "bucketMaxSpanSeconds": 3600,
}


def timeseries_files() -> dict[str, bytes]:
    return {
        "weather.metadata.json": _metadata(
            "weather",
            [{"v": 2, "key": {"meta": 1, "t": 1}, "name": "meta_1_t_1"}],
            timeseries=TIMESERIES,
        ),
        "system.buckets.weather.bson": b"".join(_buckets(4)),
        "plain.bson": b"".join(_docs("p", 6)),
        "plain.metadata.json": _metadata("plain", []),
    }


def test_timeseries_on_a_server_without_them_fails_that_collection(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _write_dump(tmp_path, new_database, timeseries_files())
    done = _restore_cli(mongo_uri, tmp_path / "store", new_database)
    assert done.returncode == PARTIAL, done.stderr
    assert "weather is a time-series collection" in done.stderr, done.stderr
    assert "restored 1 collection, 1 failed" in done.stdout, done.stdout
    assert _names(mongo_uri, new_database) == ["plain"]  # no buckets as a plain collection
    assert not any(n.startswith(TEMP_PREFIX) for n in _names(mongo_uri, new_database))

    # mongorestore fails the same way, creating the collection with its options.
    theirs = f"{new_database}_mr"
    try:
        ran = _mongorestore(mongo_uri, tmp_path, theirs, timeseries_files())
        assert ran.returncode != 0 and "timeseries" in ran.stderr, ran.stderr
        assert "weather" not in _names(mongo_uri, theirs)
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(theirs)


@pytest.fixture(scope="module")
def timeseries_server() -> Iterator[FakeServer]:
    """A server with time series (FerretDB has none): the fake wire server, writable."""
    with FakeServer.spawn(writable=True) as server:
        yield server


@pytest.mark.parametrize("order", ["metadata first", "buckets first"])
async def test_timeseries_restore_where_the_server_has_them(
    timeseries_server: FakeServer, tmp_path: Path, order: str
) -> None:
    """As mongorestore: create NAME with its time-series options, insert the buckets
    into system.buckets.NAME, build NAME's indexes. The buckets coming before the
    metadata (a dump tarred in file-system order) gives the same result."""
    database = f"ts_{order[0]}"
    files = timeseries_files()
    if order == "buckets first":
        files = dict(reversed(files.items()))
    _write_dump(tmp_path, database, files)

    report = await mongosnap.restore(timeseries_server.uri, tmp_path / "store", database=database)

    assert {c.name: c.status for c in report.collections} == {
        "weather": "restored",
        "plain": "restored",
    }, report.collections
    with MongoClient(timeseries_server.uri) as client:
        db = client[database]
        specs = {c["name"]: c for c in db.list_collections()}
        assert sorted(specs) == ["plain", "system.buckets.weather", "weather"]
        assert specs["weather"]["type"] == "timeseries"
        assert specs["weather"]["options"] == {"timeseries": TIMESERIES}
        stored = split_bson(b"".join(db["system.buckets.weather"].find_raw_batches()))
        assert stored == split_bson(files["system.buckets.weather.bson"])
        names = {ix["name"]: dict(ix["key"]) for ix in db["weather"].list_indexes()}
        assert names == {"meta_1_t_1": {"meta": 1, "t": 1}}
        assert split_bson(b"".join(db["plain"].find_raw_batches())) == _docs("p", 6)
