"""``undo``: the writes of a time window taken back, document by document, from an
archive and the archived oplog. On a module-private oplog FerretDB with a real
``mongosnap oplog`` archiver; documents compared as raw BSON."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from faultproxy import FaultProxy, Hold
from helpers import run_cli, server_documents
from oplog_support import ArchiverProcess, sidecars, wait_for
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError
from test_json_schemas import check

import mongosnap
from mongosnap import NoBackupsFound, PointInTimeUnavailable
from mongosnap.oplog.chunks import GapInfo, gap_key
from mongosnap.oplog.position import Ts
from mongosnap.pipelines.undo_ledger import COLLECTION as LEDGER

OPLOG_SIZE = 64 << 20


def _newest(uri: str) -> Ts:
    with MongoClient(uri) as client:
        entry = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    assert entry is not None
    return Ts.from_bson(entry["ts"])


def _after(ts: Ts) -> Ts:
    return Ts(ts.t, ts.i + 1)


def _by_id(documents: list[bytes]) -> dict[Any, bytes]:
    return {bson.decode(d)["_id"]: d for d in documents}


@dataclass
class Bed:
    """A private oplog FerretDB, one destination, one archiver for every scene."""

    uri: str
    dest: Path
    archiver: ArchiverProcess

    def archived(self) -> None:
        """Until the chunks hold every entry the server has now."""
        newest = _newest(self.uri)
        wait_for(
            lambda: any(c.last_ts >= newest for c in sidecars(self.dest)),
            f"the archiver to write {newest}",
        )

    def documents(self, database: str, collection: str = "coll") -> dict[Any, bytes]:
        return _by_id(server_documents(self.uri, database, collection))


@pytest.fixture(scope="module")
def bed(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    name = f"ferretdb-undo-{uuid.uuid4().hex[:8]}"
    uri = str(testbed.start_oplog_ferretdb(name, OPLOG_SIZE))
    dest = tmp_path_factory.mktemp("undo")
    archiver = None
    try:
        with MongoClient(uri) as client:
            client["warmup"]["x"].insert_one({"_id": 1})  # a first entry for --start now
        options = ("--interval", "0.3", "--start", "now", "--settle", "0")
        archiver = ArchiverProcess(dest, uri, *options)
        archiver.wait_line("oplog reader ready")
        with MongoClient(uri) as client:
            client["warmup"]["x"].insert_one({"_id": 2})
        archiver.wait_read_past(_newest(uri))  # archiving before the first scene's backup
        yield Bed(uri, dest, archiver)
    finally:
        if archiver is not None:
            assert archiver.terminate() == 143
        testbed.stop_server(name)


def _seeded(i: int) -> dict[str, Any]:
    return {
        "_id": i,
        "group": i % 10,
        "status": "ok",
        "n": i,
        "tags": ["a", i],
        "pad": "x" * (i % 30),
    }


@dataclass
class Scene:
    """A collection after a backup, legitimate writes, a bad window, later writes."""

    database: str
    first: Ts
    last: Ts
    before: dict[Any, bytes]
    """Every document at the window's start (raw, as the server sends it)."""
    after: dict[Any, bytes]
    """Every document after the later writes: the state undo starts from."""
    other: list[bytes]
    deleted: set[int] = field(default_factory=set)
    wiped: set[int] = field(default_factory=set)
    bad_inserts: set[int] = field(default_factory=set)
    later: set[int] = field(default_factory=set)
    """Touched by the window, then written again: the conflicts."""

    @property
    def touched(self) -> set[int]:
        return self.deleted | self.wiped | self.bad_inserts


def make_scene(bed: Bed, size: int) -> Scene:
    database = f"undo_{uuid.uuid4().hex[:10]}"
    with MongoClient(bed.uri) as client:
        coll, other = client[database]["coll"], client[database]["other"]
        coll.insert_many([_seeded(i) for i in range(size)])
        other.insert_many([{"_id": i, "v": i} for i in range(50)])
        asyncio.run(mongosnap.backup(bed.uri, str(bed.dest), database=database, oplog=True))
        # legitimate writes between the archive and the window
        coll.update_many({"group": 5, "n": {"$lt": 100}}, {"$set": {"status": "legit-before"}})
        coll.delete_one({"_id": 7})
        coll.insert_many([{"_id": 100_000 + i, "status": "new"} for i in range(10)])
        before = _by_id(server_documents(bed.uri, database, "coll"))
        first = _after(_newest(bed.uri))
        # the bad window: ~30 % deleted, 20 % overwritten, a few inserts
        coll.delete_many({"group": {"$lt": 3}})
        coll.update_many(
            {"group": {"$in": [3, 4]}}, {"$set": {"status": "wiped"}, "$unset": {"pad": ""}}
        )
        coll.insert_many([{"_id": 200_000 + i, "status": "bad"} for i in range(10)])
        last = _newest(bed.uri)
        # later legitimate writes, some to documents the window touched
        later = {3, 13, 23, 33, 43, 53, 0, 10, 20, 200_000}
        coll.update_many({"_id": {"$in": [3, 13, 23, 33, 43, 53]}}, {"$set": {"status": "later"}})
        coll.insert_many([{"_id": i, "status": "re-created"} for i in (0, 10, 20)])
        coll.delete_one({"_id": 200_000})
        coll.update_many({"group": 5, "n": {"$lt": 200}}, {"$set": {"status": "legit-after"}})
        coll.insert_many([{"_id": 300_000 + i, "status": "newer"} for i in range(5)])
    bed.archived()
    ids = [i for i in range(size) if i != 7]
    return Scene(
        database,
        first,
        last,
        before,
        bed.documents(database),
        server_documents(bed.uri, database, "other"),
        deleted={i for i in ids if i % 10 < 3},
        wiped={i for i in ids if i % 10 in (3, 4)},
        bad_inserts={200_000 + i for i in range(10)},
        later=later,
    )


@pytest.fixture(scope="module")
def scene(bed: Bed) -> Scene:
    """The main scene (600 documents, 300 touched by the window); the tests
    that write to it come last."""
    return make_scene(bed, 600)


def _undo(bed: Bed, scene: Scene, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        *("undo", str(bed.dest), "--uri", bed.uri, scene.database, "coll"),
        *("--from", str(scene.first), "--to", str(scene.last), "--json", *extra),
    )


def _report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _expected_counts(scene: Scene) -> dict[str, int]:
    return {
        "touched": len(scene.touched),
        "deleted": len(scene.deleted),
        "updated": len(scene.wiped),
        "inserted": len(scene.bad_inserts),
    }


def test_dry_run_counts_and_changes_nothing(bed: Bed, scene: Scene) -> None:
    result = _report(_undo(bed, scene, "--dry-run"))
    counts = _expected_counts(scene)
    assert {k: result[k] for k in counts} == counts
    assert result["mode"] == "dry_run" and result["staged_collection"] is None
    check("undo", result)
    conflicts = {json.loads(c["_id"]) for c in result["conflict_ids"]}
    assert conflicts == scene.later - {200_000}, result["conflict_ids"][:20]
    assert bed.documents(scene.database) == scene.after
    with MongoClient(bed.uri) as client:
        assert LEDGER not in client[scene.database].list_collection_names()


def test_stage_publishes_the_pre_images_in_a_new_collection(bed: Bed, scene: Scene) -> None:
    result = _report(_undo(bed, scene))
    name = result["staged_collection"]
    assert name.startswith("coll_undo_") and name.endswith("Z")
    staged = bed.documents(scene.database, name)
    wanted = scene.deleted | scene.wiped
    assert set(staged) == wanted
    for key in wanted:
        assert staged[key] == scene.before[key], key  # byte for byte
    assert bed.documents(scene.database) == scene.after  # the live collection untouched
    with MongoClient(bed.uri) as client:
        names = client[scene.database].list_collection_names()
    assert not [n for n in names if n.startswith("mongosnap_tmp_")]


def test_apply_restores_pre_images_and_leaves_later_writes(
    bed: Bed, scene: Scene, tmp_path: Path
) -> None:
    metrics = tmp_path / "undo.prom"
    result = _report(_undo(bed, scene, "--apply", "--metrics-file", str(metrics)))
    now = bed.documents(scene.database)
    restorable = (scene.deleted | scene.wiped) - scene.later
    for key in restorable:
        assert now.get(key) == scene.before[key], key
    for key in set(scene.after) | set(now):
        if key not in restorable:
            assert now.get(key) == scene.after.get(key), key  # conflicts, inserts, the rest
    check("undo", result)
    assert {json.loads(c["_id"]) for c in result["conflict_ids"]} == scene.later - {200_000}
    assert {c["reason"] for c in result["conflict_ids"]} == {"later"}
    assert result["conflicts"] == len(scene.later) - 1
    assert result["restored"] == len(restorable)
    assert result["kept_inserted"] == len(scene.bad_inserts) - 1
    assert server_documents(bed.uri, scene.database, "other") == scene.other
    text = metrics.read_text()
    assert (
        f'mongosnap_undo_documents_total{{command="undo",outcome="restored"}} {len(restorable)}.0'
        in text
    )
    assert 'mongosnap_undo_conflicts{command="undo"} 9.0' in text

    # the same undo again: everything was settled, nothing is written twice
    again = _report(_undo(bed, scene, "--apply"))
    assert again["resumed"] and again["restored"] == len(restorable)
    assert bed.documents(scene.database) == now

    # then with --remove-inserted and --force: the inserts go, the conflicts are overwritten
    forced = _report(_undo(bed, scene, "--apply", "--remove-inserted", "--force"))
    assert forced["conflicts"] == 0 and forced["removed"] == len(scene.bad_inserts) - 1
    final = bed.documents(scene.database)
    for key in scene.touched:
        assert final.get(key) == scene.before.get(key), key
    untouched = set(scene.after) - scene.touched
    assert {k: final[k] for k in untouched} == {k: scene.after[k] for k in untouched}


def test_remove_inserted_without_force_keeps_conflicts(bed: Bed) -> None:
    scene = make_scene(bed, 100)
    result = _report(_undo(bed, scene, "--apply", "--remove-inserted"))
    now = bed.documents(scene.database)
    assert result["removed"] == len(scene.bad_inserts) - 1
    assert not (scene.bad_inserts & set(now))
    for key in scene.later - {200_000}:
        assert now[key] == scene.after[key]


def test_interrupted_apply_resumes_and_reports_everything(bed: Bed) -> None:
    scene = make_scene(bed, 200)
    argv = [sys.executable, "-m", "mongosnap", "undo", str(bed.dest), "--uri", bed.uri]
    argv += [scene.database, "coll", "--from", str(scene.first), "--to", str(scene.last)]
    argv += ["--apply", "--batch-size", "5", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with MongoClient(bed.uri) as client:
        ledger = client[scene.database][LEDGER]
        wait_for(lambda: ledger.count_documents({"state": "done"}) >= 3, "three applied batches")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        records = list(ledger.find({"run": {"$exists": True}}))
        # A kill between a batch's writes and its "done" record leaves the batch
        # pending with its documents written: made so here, whatever the moment
        # the kill landed, so the rerun must find those writes by looking.
        done = max((r for r in records if r["state"] == "done"), key=lambda r: r["n"])
        ledger.update_one(
            {"_id": done["_id"]}, {"$set": {"state": "pending"}, "$unset": {"outcomes": ""}}
        )
    recorded = {bson.decode(bytes(k))["_id"] for r in records for k in r["keys"]}
    now = bed.documents(scene.database)
    written = {k for k in scene.touched if now.get(k) != scene.after.get(k)}
    assert written and written <= recorded  # nothing changed that the ledger does not hold

    result = _report(_undo(bed, scene, "--apply"))
    assert result["resumed"]
    restorable = (scene.deleted | scene.wiped) - scene.later
    assert result["restored"] == len(restorable)
    final = bed.documents(scene.database)
    for key in restorable:
        assert final.get(key) == scene.before[key], key
    for key in scene.later - {200_000}:
        assert final[key] == scene.after[key]


def test_interrupted_by_sigterm_says_what_it_left_and_resumes(bed: Bed) -> None:
    scene = make_scene(bed, 150)
    argv = [sys.executable, "-m", "mongosnap", "undo", str(bed.dest), "--uri", bed.uri]
    argv += [scene.database, "coll", "--from", str(scene.first), "--to", str(scene.last)]
    argv += ["--apply", "--batch-size", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with MongoClient(bed.uri) as client:
        ledger = client[scene.database][LEDGER]
        wait_for(lambda: ledger.count_documents({"state": "done"}) >= 1, "an applied batch")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert f"recorded in {scene.database}.mongosnap_undo" in stderr
    result = _report(_undo(bed, scene, "--apply"))
    restorable = (scene.deleted | scene.wiped) - scene.later
    assert result["resumed"] and result["restored"] == len(restorable)
    final = bed.documents(scene.database)
    assert all(final.get(key) == scene.before[key] for key in restorable)


LEDGER_UPDATE = b"\x02update\x00" + struct.pack("<i", len(LEDGER) + 1) + LEDGER.encode() + b"\0"
"""An OP_MSG update command's first element, {update: LEDGER}: the run's header
first, then each batch's "done" record."""


def test_a_sighup_mid_apply_says_what_it_left_and_resumes(bed: Bed) -> None:
    """Held at the proxy: the second batch's "done" record, its writes made. The
    SIGHUP comes then, and the record is cut: the rerun must find those writes."""
    scene = make_scene(bed, 150)
    port = int(bed.uri.rsplit(":", 1)[1].split("/")[0])
    with FaultProxy(("127.0.0.1", port)) as proxy:
        uri = f"mongodb://{proxy.address}/?directConnection=true"  # not led around the proxy
        argv = [sys.executable, "-m", "mongosnap", "undo", str(bed.dest), "--uri", uri]
        argv += [scene.database, "coll", "--from", str(scene.first), "--to", str(scene.last)]
        argv += ["--apply", "--batch-size", "2"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            held = proxy.hold("up", LEDGER_UPDATE)
            for _ in range(2):  # the header, batch 1's record: let through
                _wait_held(held, proc)
                held, passed = proxy.hold("up", LEDGER_UPDATE), held
                passed.release()
            _wait_held(held, proc)
            proc.send_signal(signal.SIGHUP)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
        proxy.reset_all()  # the held record never lands
    assert proc.returncode == 129, stderr
    assert "Traceback" not in stderr
    assert f"recorded in {scene.database}.mongosnap_undo" in stderr
    with MongoClient(bed.uri) as client:
        records = list(client[scene.database][LEDGER].find())
    states = [r["state"] for r in records if "keys" in r]  # the batches, not the header
    assert sorted(states) == ["done", "pending"], states

    result = _report(_undo(bed, scene, "--apply"))
    restorable = (scene.deleted | scene.wiped) - scene.later
    assert result["resumed"] and result["restored"] == len(restorable)
    final = bed.documents(scene.database)
    assert all(final.get(key) == scene.before[key] for key in restorable)
    for key in scene.later - {200_000}:
        assert final[key] == scene.after[key]


def _wait_held(held: Hold, proc: subprocess.Popen[str]) -> None:
    while not held.reached.wait(0.01):
        assert proc.poll() is None, f"undo ended first: {proc.communicate()}"


class _Racer:
    """Writes once to each of the window's documents, in random order, from the
    moment undo starts applying (its ledger appears): some writes land before
    undo reads a batch, some between its read and its write, some after."""

    def __init__(self, uri: str, database: str, keys: list[int]) -> None:
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri)
        self.database = self.client[database]
        self.keys = random.sample(keys, len(keys))
        self.wrote: dict[int, str] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        wait_for(lambda: self.database[LEDGER].find_one() is not None, "undo to start applying")
        coll = self.database["coll"]
        for key in self.keys:
            value = f"racer-{key}"
            if not coll.update_one({"_id": key}, {"$set": {"status": value}}).matched_count:
                try:
                    coll.insert_one({"_id": key, "status": value})
                except DuplicateKeyError:  # undo re-inserted it meanwhile
                    coll.update_one({"_id": key}, {"$set": {"status": value}})
            self.wrote[key] = value
            time.sleep(0.003)


def test_concurrent_writes_to_deleted_documents_are_never_overwritten(bed: Bed) -> None:
    """The application re-creates or writes documents the window deleted while
    undo re-inserts them: an insert fails on the duplicate ``_id``, so every
    write of the application survives. (Replacements are conditional too, but
    FerretDB 1.24 runs an update as a read, then a write by ``_id``, so no
    filter makes them atomic there: docs/undo.md, limits.)"""
    scene = make_scene(bed, 150)
    deleted = scene.deleted - scene.later
    racer = _Racer(bed.uri, scene.database, sorted(deleted)[::2])
    racer.thread.start()
    try:
        result = _report(_undo(bed, scene, "--apply", "--batch-size", "40"))
    finally:
        racer.thread.join()
        racer.client.close()
    now = bed.documents(scene.database)
    for key, value in racer.wrote.items():
        assert bson.decode(now[key])["status"] == value, key  # the racer's write survived
    for key in (scene.deleted | scene.wiped) - scene.later - set(racer.wrote):
        assert now[key] == scene.before[key], key
    reasons = {c["reason"] for c in result["conflict_ids"]}
    assert result["conflicts"] >= len(scene.later) - 1 and reasons <= {"later", "changed", "raced"}


def test_refuses_a_window_the_archived_oplog_does_not_reach(bed: Bed, scene: Scene) -> None:
    future = Ts(scene.last.t + 3600, 1)
    done = run_cli(
        *("undo", str(bed.dest), "--uri", bed.uri, scene.database, "coll"),
        *("--from", str(future), "--dry-run"),
    )
    assert done.returncode == PointInTimeUnavailable.exit_code, done.stderr
    assert "no oplog chunk reaches" in done.stderr


def test_refuses_a_window_with_a_gap(bed: Bed, scene: Scene, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bed.dest, copy)
    gap = GapInfo(scene.first, scene.last, datetime.now(UTC), "oplog rolled over")
    (copy / gap_key(gap.after, gap.before)).write_bytes(gap.to_json())
    done = run_cli(
        *("undo", str(copy), "--uri", bed.uri, scene.database, "coll"),
        *("--from", str(scene.first), "--to", str(scene.last), "--dry-run"),
    )
    assert done.returncode == PointInTimeUnavailable.exit_code, done.stderr
    assert "gap" in done.stderr and "oplog rolled over" in done.stderr


def test_refuses_without_an_archive_before_the_window(
    bed: Bed, scene: Scene, tmp_path: Path
) -> None:
    done = run_cli(
        *("undo", str(bed.dest), "--uri", bed.uri, scene.database, "coll"),
        *("--from", "2020-01-01T00:00:00Z", "--dry-run"),
    )
    assert done.returncode == PointInTimeUnavailable.exit_code, done.stderr
    assert f"no complete archive of {scene.database}" in done.stderr
    (tmp_path / "empty").mkdir()
    empty = run_cli(
        *("undo", str(tmp_path / "empty"), "--uri", bed.uri, scene.database, "coll"),
        *("--from", str(scene.first), "--dry-run"),
    )
    assert empty.returncode == NoBackupsFound.exit_code, empty.stderr


def test_refuses_a_collection_dropped_and_recreated(bed: Bed) -> None:
    database = f"undo_{uuid.uuid4().hex[:10]}"
    with MongoClient(bed.uri) as client:
        coll = client[database]["coll"]
        coll.insert_many([_seeded(i) for i in range(50)])
        asyncio.run(mongosnap.backup(bed.uri, str(bed.dest), database=database, oplog=True))
        first = _after(_newest(bed.uri))
        coll.drop()  # FerretDB logs no drop
        coll.insert_many([{"_id": i, "status": "another incarnation"} for i in range(50)])
        coll.delete_many({"_id": {"$lt": 10}})
    bed.archived()
    done = run_cli(
        *("undo", str(bed.dest), "--uri", bed.uri, database, "coll"),
        *("--from", str(first), "--apply"),
    )
    assert done.returncode == PointInTimeUnavailable.exit_code, done.stderr
    assert "dropped and recreated" in done.stderr
    with MongoClient(bed.uri) as client:
        assert client[database]["coll"].count_documents({}) == 40  # nothing was changed


def test_library_undo_returns_a_report(bed: Bed, scene: Scene) -> None:
    report = asyncio.run(
        mongosnap.undo(
            bed.uri,
            str(bed.dest),
            database=scene.database,
            collection="coll",
            start=scene.first,
            end=scene.last,
            mode="dry_run",
        )
    )
    assert isinstance(report, mongosnap.UndoReport)
    assert report.to_dict()["touched"] == len(scene.touched)
    assert report.member_bytes > 0 and report.bytes_fetched > 0
