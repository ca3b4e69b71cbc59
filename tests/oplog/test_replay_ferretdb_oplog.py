"""Replay of a real oplog: the entries FerretDB 1.24 writes, replayed byte for byte.

FerretDB keeps ``local.oplog.rs`` when started with ``--repl-set-name`` and the
capped collection exists before the writes (i/u/d only; each update as ``$v:1
$set`` of the whole new document). This module starts its own such FerretDB
from the test bed's binary, writes through it with every kind of update, then
replays its oplog into another database and compares the raw documents.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testbed as testbed_module  # scripts/testbed.py, loaded by tests/conftest.py
from bson import Int64, ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from mongosnap.oplog import replay


@pytest.fixture(scope="module")
def oplog_uri(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A FerretDB with an oplog (the test bed's binary; ``testbed`` makes sure it is built)."""
    root: Path = tmp_path_factory.mktemp("ferretdb-oplog")
    port = testbed_module.free_port()
    argv = [
        str(testbed_module.bin_dir() / "ferretdb"),
        f"--listen-addr=127.0.0.1:{port}",
        "--handler=sqlite",
        f"--sqlite-url=file:{root}/",
        f"--state-dir={root}",
        "--telemetry=disable",
        "--debug-addr=-",
        "--log-level=warn",
        "--repl-set-name=rs0",
    ]
    with (root / "log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            assert proc.poll() is None and time.monotonic() < deadline, (root / "log").read_text()
            time.sleep(0.1)
        uri = f"mongodb://127.0.0.1:{port}/"
        with MongoClient(uri) as client:
            client.local.create_collection("oplog.rs", capped=True, size=64 * 1024 * 1024)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(port: int) -> bool:
    try:
        return bool(testbed_module.mongo_ping(port))
    except OSError:
        return False


def raw_documents(client: MongoClient[RawBSONDocument], database: str, name: str) -> list[bytes]:
    return [bytes(d.raw) for d in client[database][name].find().sort("_id", 1)]


async def test_ferretdb_oplog_replays_byte_for_byte(oplog_uri: str) -> None:
    raw_client: MongoClient[RawBSONDocument] = MongoClient(
        oplog_uri, document_class=RawBSONDocument
    )
    with MongoClient(oplog_uri) as client, raw_client:
        oplog = raw_client.local["oplog.rs"]
        start = len(list(oplog.find()))
        db = client.src
        db.a.insert_many(
            [{"_id": i, "n": Int64(i), "tags": ["x"], "meta": {"k": i}} for i in range(20)]
        )
        db.a.update_one({"_id": 1}, {"$set": {"z": 1, "b": 2}})  # new fields, unsorted
        db.a.update_one({"_id": 2}, {"$unset": {"meta": 1}})  # a field removed
        db.a.update_one({"_id": 3}, {"$push": {"tags": "y"}, "$inc": {"n": 5}})
        db.a.update_many({"_id": {"$gt": 10}}, {"$set": {"meta.k": -1}})
        db.a.replace_one({"_id": 4}, {"other": True})
        db.a.delete_many({"_id": {"$gte": 15}})
        db.b.insert_one({"_id": ObjectId(), "s": "x"})
        entries = [bytes(e.raw) for e in oplog.find().sort("$natural", 1)][start:]

        report = await replay(oplog_uri, entries, databases={"src": "dst"})
        again = await replay(oplog_uri, entries, databases={"src": "dst"})

        for name in ("a", "b"):
            assert raw_documents(raw_client, "dst", name) == raw_documents(raw_client, "src", name)
    assert report.applied == {"i": 21, "u": 13, "d": 5}
    assert again.applied == report.applied and report.stop == "end"
