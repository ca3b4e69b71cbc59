"""`mongosnap oplog --tripwire ... --stage` on the oplog FerretDB: a bad deleteMany
trips a rule, and once its chunk is stored the deleted documents' pre-images
appear, byte for byte, as COLL_undo_<time>; the live collection is not
written; --on-trip gets the staged name. A trip whose undo cannot be staged
(no archive) is logged and counted, and archiving goes on."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import bson
from helpers import server_documents
from oplog_support import WAIT, ArchiverProcess
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

import mongosnap
from mongosnap.oplog.position import Ts
from mongosnap.oplog.tripwire import Trip, parse
from mongosnap.pipelines.trip_stage import Staged, TripStager
from mongosnap.storage.memory import MemoryStorage

RECORD = (
    "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
    "if k.startswith('MONGOSNAP_TRIP_')}, open(sys.argv[1], 'w'))"
)


def _by_id(documents: list[bytes]) -> dict[object, bytes]:
    return {bson.decode(d)["_id"]: d for d in documents}


def _samples(prom: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }


async def test_a_staging_gives_up_when_no_chunk_reaches_the_window() -> None:
    """The archiver never stores the chunk: the staging ends as a timeout, logged
    and handed on, without running undo."""
    outcomes: list[Staged] = []
    wanted: list[Ts] = []
    stager = TripStager(lambda ns, rule: None, lambda _, staged: outcomes.append(staged), wait=0.2)
    stager.attach("127.0.0.1:1", MemoryStorage(), wanted.append)
    stager.stored(Ts(99, 0))
    rule = parse("app.users:deletes>1/60s")
    stager(Trip("app.users", rule, 2, 40, 100, first=Ts(100, 0), last=Ts(100, 2)))
    await asyncio.wait_for(stager.close(grace=WAIT), WAIT)
    assert wanted == [Ts(100, 2)]  # the archiver was asked for the chunk
    [staged] = outcomes
    assert (staged.outcome, staged.collection) == ("timeout", None)
    assert "no stored chunk reached 100:2" in staged.reason


def test_a_trip_stages_the_pre_images_of_the_deleted_documents(
    tmp_path: Path, new_oplog_server: Callable[[int], str]
) -> None:
    uri = new_oplog_server(16 << 20)
    database, bare = f"stage_{uuid.uuid4().hex[:10]}", f"bare_{uuid.uuid4().hex[:10]}"
    dest, record, prom = tmp_path / "dest", tmp_path / "trip.json", tmp_path / "trip.prom"
    with MongoClient(uri) as client:
        coll = client[database]["coll"]
        coll.insert_many(
            [{"_id": i, "group": i % 3, "tags": ["a", i], "pad": "x" * i} for i in range(60)]
        )
        client[bare]["coll"].insert_many([{"_id": i} for i in range(10)])
        archiver = ArchiverProcess(
            dest, uri, "--start", "now", "--interval", "3600", "--settle", "1",
            "--tripwire", f"{database}.coll:deletes>30/60s",
            "--tripwire", f"{bare}.*:deletes>5/60s",
            "--stage",
            "--on-trip", f"{sys.executable} -c \"{RECORD}\" {record}",
            "--metrics-file", str(prom),
        )  # fmt: skip
        try:
            archiver.wait_line("oplog reader ready")
            coll.update_one({"_id": 59}, {"$set": {"pad": "changed after the backup"}})
            asyncio.run(mongosnap.backup(uri, str(dest), database=database, oplog=True))
            coll.update_one({"_id": 1}, {"$set": {"pad": "changed before the window"}})
            before = _by_id(server_documents(uri, database, "coll"))
            # a database no archive holds: its staging fails, archiving goes on
            client[bare]["coll"].delete_many({})
            failed = archiver.wait_line("--stage for deletes>5/60s")
            coll.delete_many({"group": {"$lt": 2}})  # 40 documents
            staged = archiver.wait_line("pre-images staged as")
            deadline = time.monotonic() + WAIT
            while not record.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            after = _by_id(server_documents(uri, database, "coll"))
            names = client[database].list_collection_names()
        finally:
            assert archiver.terminate() == 143
    assert " failed: no complete archive of " in failed and bare in failed
    name = staged.split("pre-images staged as ", 1)[1].split()[0]
    db, _, undo_name = name.partition(".")
    assert db == database and undo_name.startswith("coll_undo_")
    deleted = {i for i in range(60) if i % 3 < 2}
    assert sorted(names) == sorted(["coll", undo_name])  # no staging copy left
    staged_docs = _by_id(server_documents(uri, database, undo_name))
    assert staged_docs == {i: before[i] for i in deleted}  # byte for byte
    assert after == {i: doc for i, doc in before.items() if i not in deleted}
    env = json.loads(record.read_text())
    assert env["MONGOSNAP_TRIP_STAGED"] == name
    assert env["MONGOSNAP_TRIP_STAGE_OUTCOME"] == "staged"
    assert env["MONGOSNAP_TRIP_NAMESPACE"] == f"{database}.coll"
    found = _samples(prom)
    stages = "mongosnap_tripwire_stages_total"
    labels = (("command", "oplog"), ("namespace", f"{database}.coll"))
    assert found[(stages, (*labels, ("outcome", "staged"), ("rule", "deletes>30/60s")))] == 1
    labels = (("command", "oplog"), ("namespace", f"{bare}.coll"))
    assert found[(stages, (*labels, ("outcome", "failed"), ("rule", "deletes>5/60s")))] == 1
