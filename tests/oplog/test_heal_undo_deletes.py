"""``heal --restore-missing`` of a shrunk collection with the oplog archived: the
deletes since the archive undone, documents inserted after it included. On a
module-private oplog FerretDB with a real ``mongosnap oplog`` archiver (the undo
tests' bed); documents compared as raw BSON."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from faultproxy import FaultProxy, Hold
from helpers import run_cli
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError
from test_json_schemas import check
from test_undo import Bed, _after, _newest, _seeded
from test_undo import bed as bed  # the undo tests' module fixture: its own FerretDB here

import mongosnap
from mongosnap.oplog.chunks import GapInfo, gap_key
from mongosnap.oplog.position import Ts
from mongosnap.pipelines import damage


@dataclass
class Shrunk:
    """A collection backed up with --oplog, written to, then shrunk by a bad deleteMany."""

    database: str
    point: Ts
    """Just after the backup: entries from here on are since the archive."""
    before: dict[Any, bytes]
    """Every document just before the bad delete."""
    archived: dict[Any, bytes]
    """Every document at the backup."""
    deleted: set[Any]
    after: dict[Any, bytes]
    """Every document once the later writes are archived."""


def shrink(bed: Bed, size: int) -> Shrunk:
    database = f"heal_{uuid.uuid4().hex[:10]}"
    with MongoClient(bed.uri) as client:
        coll = client[database]["coll"]
        coll.insert_many([_seeded(i) for i in range(size)])
        asyncio.run(mongosnap.backup(bed.uri, str(bed.dest), database=database, oplog=True))
        archived = bed.documents(database)
        point = _after(_newest(bed.uri))
        # since the archive: new documents, and updates of archived ones
        coll.insert_many([{"_id": f"new{i}", "group": i % 10, "n": i} for i in range(40)])
        coll.update_many({"group": {"$in": [0, 5]}}, {"$set": {"status": "updated"}})
        before = bed.documents(database)
        coll.delete_many({"group": {"$lt": 5}})  # the bad one: half of everything
        # later legitimate writes: they stay as they are
        coll.update_many({"group": 7}, {"$set": {"status": "later"}})
        coll.insert_many([{"_id": f"later{i}", "group": 1} for i in range(5)])
    bed.archived()
    deleted = {k for k, v in before.items() if _group(v) < 5}
    return Shrunk(database, point, before, archived, deleted, bed.documents(database))


def _group(document: bytes) -> int:
    return int(bson.decode(document)["group"])


@pytest.fixture(scope="module")
def shrunk(bed: Bed) -> Shrunk:
    return shrink(bed, 200)


def _heal(dest: Path, bed: Bed, database: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        *("heal", str(dest), "--uri", bed.uri, database, "coll", "--json"),
        *("--restore-missing", "--shrink-threshold", "20", *extra),
    )


def _damage(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    check("heal", report)
    [damage] = report["damaged"]
    return dict(damage)


def test_dry_run_says_the_oplog_would_serve_and_why_not_without_it(
    bed: Bed, shrunk: Shrunk, tmp_path: Path
) -> None:
    damage = _damage(_heal(bed.dest, bed, shrunk.database, "--dry-run"))
    assert (damage["status"], damage["source"], damage["fallback"]) == (
        "would restore",
        "oplog",
        None,
    )
    assert Ts.parse(damage["consistent_point"]) < shrunk.point
    copy = tmp_path / "no-oplog"
    shutil.copytree(bed.dest, copy, ignore=shutil.ignore_patterns("oplog"))
    damage = _damage(_heal(copy, bed, shrunk.database, "--dry-run"))
    assert (damage["status"], damage["source"]) == ("would restore", "archive")
    assert "holds no archived oplog" in damage["fallback"]
    assert bed.documents(shrunk.database) == shrunk.after  # nothing written


def test_heal_undoes_the_deletes_and_leaves_the_rest(bed: Bed, shrunk: Shrunk) -> None:
    """Every deleted document comes back as it was just before the delete (those
    inserted after the archive too, and updated ones in their updated version);
    live documents, later writes and an application's re-inserts are left alone.
    One re-insert is archived before the heal, one is not (the archiver paused)."""
    with MongoClient(bed.uri) as client:
        coll = client[shrunk.database]["coll"]
        coll.insert_one({"_id": 10, "status": "re-created, archived"})
        bed.archived()
        bed.archiver.proc.send_signal(signal.SIGSTOP)
        try:
            coll.insert_one({"_id": "new0", "status": "re-created, not archived yet"})
            mine = {10: coll.find_one({"_id": 10}), "new0": coll.find_one({"_id": "new0"})}
            done = _heal(bed.dest, bed, shrunk.database)
        finally:
            bed.archiver.proc.send_signal(signal.SIGCONT)
        damage = _damage(done)
        assert {d["_id"]: d for d in coll.find({"_id": {"$in": [10, "new0"]}})} == mine
    assert (damage["status"], damage["source"], damage["fallback"]) == ("restored", "oplog", None)
    assert damage["deleted"] == len(shrunk.deleted) - 1  # 10 is back in the archived oplog
    assert damage["inserted"] == len(shrunk.deleted) - 2
    assert "not archived yet and were not undone" in done.stderr  # new0's insert
    now = bed.documents(shrunk.database)
    for key in shrunk.deleted - {10, "new0"}:
        assert now[key] == shrunk.before[key], key  # byte for byte, as just before the delete
    untouched = set(shrunk.after) | {10, "new0"}
    assert set(now) == untouched | (shrunk.deleted - {10, "new0"})
    for key in set(shrunk.after):
        assert now[key] == shrunk.after[key], key
    # the archive alone would have given back neither the new documents nor the updates
    assert any(str(k).startswith("new") for k in shrunk.deleted - shrunk.archived.keys())
    assert any(shrunk.archived[k] != shrunk.before[k] for k in shrunk.deleted & {0, 20, 30})


class _Racer:
    """Re-inserts deleted documents, last deleted first, from the moment the heal
    has put back its first one: some land before a batch's lookup, some between
    its lookup and its insert, some after."""

    def __init__(self, uri: str, database: str, keys: list[Any]) -> None:
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri)
        self.coll = self.client[database]["coll"]
        self.keys = keys
        self.wrote: list[Any] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and not self.coll.find_one({"_id": {"$in": self.keys}}):
            time.sleep(0.001)
        for key in reversed(self.keys):
            if self.stop.is_set():
                return
            try:
                self.coll.insert_one({"_id": key, "racer": True})
            except DuplicateKeyError:  # the heal put it back first
                continue
            self.wrote.append(key)


def test_a_concurrent_re_insert_is_never_overwritten(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = shrink(bed, 100)
    monkeypatch.setattr(damage, "BATCH", 5)  # 14 lookups and inserts for the racer to meet
    racer = _Racer(bed.uri, scene.database, sorted(scene.deleted, key=str))
    racer.thread.start()
    try:
        report = asyncio.run(
            mongosnap.heal(
                bed.uri,
                str(bed.dest),
                database=scene.database,
                collections=["coll"],
                restore_missing=True,
                shrink_threshold=20,
            )
        )
    finally:
        racer.stop.set()
        racer.thread.join()
        racer.client.close()
    [done] = report.damaged
    assert racer.wrote, "the racer re-inserted nothing: no race happened"
    assert (done.status, done.source, done.deleted) == ("restored", "oplog", len(scene.deleted))
    now = bed.documents(scene.database)
    for key in racer.wrote:
        assert bson.decode(now[key]) == {"_id": key, "racer": True}, key  # kept as written
    for key in scene.deleted - set(racer.wrote):
        assert now[key] == scene.before[key], key
    assert done.inserted == len(scene.deleted) - len(racer.wrote)


def test_text_summary_names_the_oplog_and_what_comes_back(bed: Bed) -> None:
    scene = shrink(bed, 100)
    done = run_cli(
        *("heal", str(bed.dest), "--uri", bed.uri, scene.database, "coll"),
        *("--restore-missing", "--shrink-threshold", "20"),
    )
    assert done.returncode == 0, done.stderr
    when = datetime.fromtimestamp(_newest(bed.uri).t, UTC)
    assert f"restored {len(scene.deleted)} documents deleted since " in done.stdout
    assert ", from the oplog up to " in done.stdout and f"{when:%Y-%m-%d}" in done.stdout
    assert "documents deleted on purpose since then came back too" in done.stdout
    assert "not archived yet" not in done.stderr  # the heal's own inserts are not deletes
    now = bed.documents(scene.database)
    assert {k: now[k] for k in scene.deleted} == {k: scene.before[k] for k in scene.deleted}


def test_a_gap_falls_back_to_the_archive_and_says_why(bed: Bed, tmp_path: Path) -> None:
    scene = shrink(bed, 100)
    copy = tmp_path / "gap"
    shutil.copytree(bed.dest, copy)
    last = _newest(bed.uri)
    gap = GapInfo(scene.point, last, datetime.now(UTC), "oplog rolled over")
    (copy / gap_key(gap.after, gap.before)).write_bytes(gap.to_json())
    done = _heal(copy, bed, scene.database)
    damage = _damage(done)
    assert (damage["status"], damage["source"]) == ("restored", "archive")
    assert "gap" in damage["fallback"] and "oplog rolled over" in damage["fallback"]
    assert "not the oplog" in done.stderr and "oplog rolled over" in done.stderr
    now = bed.documents(scene.database)
    back = scene.deleted & scene.archived.keys()
    assert damage["inserted"] == len(back)
    assert {k: now[k] for k in back} == {k: scene.archived[k] for k in back}  # as archived
    assert not (scene.deleted - scene.archived.keys()) & now.keys()  # the new ones are lost


def test_a_collection_recreated_since_the_archive_is_not_written_to(bed: Bed) -> None:
    """FerretDB logs no drop: the re-insert of an archived _id shows another
    incarnation, whose deletes the archive cannot undo. Failed, nothing written."""
    database = f"heal_{uuid.uuid4().hex[:10]}"
    with MongoClient(bed.uri) as client:
        coll = client[database]["coll"]
        coll.insert_many([_seeded(i) for i in range(50)])
        asyncio.run(mongosnap.backup(bed.uri, str(bed.dest), database=database, oplog=True))
        coll.drop()
        coll.insert_many([{"_id": i, "status": "another incarnation"} for i in range(50)])
        coll.delete_many({"_id": {"$lt": 40}})
    bed.archived()
    left = bed.documents(database)
    done = run_cli(
        *("heal", str(bed.dest), "--uri", bed.uri, database, "coll", "--json"),
        *("--restore-missing", "--shrink-threshold", "20"),
    )
    assert done.returncode == 42, done.stderr
    [damage] = json.loads(done.stdout.splitlines()[0])["damaged"]
    assert (damage["status"], damage["source"]) == ("failed", "oplog")
    assert "dropped and recreated" in damage["error"]
    assert bed.documents(database) == left


INSERT_COLL = b"\x02insert\x00\x05\x00\x00\x00coll\x00"
"""An OP_MSG insert command's first element, {insert: "coll"}: held at the proxy."""


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_a_signal_mid_insert_leaves_whole_absent_documents_and_a_rerun_completes(
    bed: Bed, sig: signal.Signals, code: int
) -> None:
    """1,120 deleted: two insert batches. The first lands, the second is held at
    the proxy when the signal comes, then cut: it never reaches the server. What
    is left is the first batch's documents, whole, and an application's
    re-insert untouched; the exit line says how many were put back; a rerun
    puts back the rest byte for byte."""
    scene = shrink(bed, 2200)
    mine = sorted(scene.deleted, key=str)[0]
    with MongoClient(bed.uri) as client:
        client[scene.database]["coll"].insert_one({"_id": mine, "status": "re-created"})
        kept = client[scene.database]["coll"].find_one({"_id": mine})
    port = int(bed.uri.rsplit(":", 1)[1].split("/")[0])
    with FaultProxy(("127.0.0.1", port)) as proxy:
        first = proxy.hold("up", INSERT_COLL)
        command = ["heal", str(bed.dest), "--uri", _direct(proxy.address)]
        options = [scene.database, "coll", "--restore-missing", "--shrink-threshold", "20"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "mongosnap", *command, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _reached(first, proc)
            second = proxy.hold("up", INSERT_COLL)
            first.release()
            _reached(second, proc)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proxy.reset_all() >= 1  # the held batch is cut: it never lands
    assert proc.returncode == code, err
    assert "Traceback" not in err

    now = bed.documents(scene.database)
    back = (scene.deleted & now.keys()) - {mine}
    assert 0 < len(back) < len(scene.deleted) - 1  # the first batch only
    for key in back:
        assert now[key] == scene.before[key], key  # whole, as just before the delete
    assert bson.decode(now[mine]) == kept  # never overwritten
    assert {k: now[k] for k in scene.after} == scene.after  # live documents untouched
    said = f"the repair of {scene.database}.coll was interrupted after putting back {len(back):,} "
    assert said in err and "--restore-missing again, with a --shrink-threshold" in err, err
    assert f"it holds about {len(now):,} documents, the archive 2,200" in err, err

    # partly refilled, it shrank by less than 20%: the rerun's threshold is lower
    done = _damage(_heal(bed.dest, bed, scene.database, "--shrink-threshold", "1"))
    assert done["status"] == "restored"
    assert done["inserted"] == len(scene.deleted) - 1 - len(back)
    now = bed.documents(scene.database)
    assert {k: now[k] for k in scene.deleted - {mine}} == {
        k: scene.before[k] for k in scene.deleted - {mine}
    }
    assert bson.decode(now[mine]) == kept
    assert set(now) == set(scene.after) | scene.deleted


def _reached(held: Hold, proc: subprocess.Popen[str]) -> None:
    """Until ``held`` holds its request; the heal still running."""
    while not held.reached.wait(0.01):
        assert proc.poll() is None, f"the heal ended first: {proc.communicate()}"


def _direct(address: str) -> str:
    """The proxy's URI: a direct connection, or the replica set's hello would
    lead the driver to the server's own address, around the proxy."""
    return f"mongodb://{address}/?directConnection=true"
