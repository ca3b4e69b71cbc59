"""``backup --oplog``: dump/oplog.bson brings a live backup to one instant."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tarfile
import threading
import uuid
from pathlib import Path
from typing import Any

import bson
import pytest
from helpers import run_cli, server_documents, split_bson
from oplog_support import WAIT, newest_ts, server_entries, ts_of, wait_for
from pymongo import AsyncMongoClient, MongoClient, monitoring
from test_mongo_tools import tools_dir

import mongosnap
from mongosnap import CorruptArchive
from mongosnap.archive.manifest import Manifest
from mongosnap.oplog.position import Ts
from mongosnap.progress import Progress, Stage

SEEDED = 400
BASE = 100_000


class KeyedWriter:
    """Op k is one of three kinds, each carrying k so its oplog entry names it:
    k%3==0 inserts {_id: BASE+k, k}; 1 sets k on seeded doc k%SEEDED; 2 deletes BASE+k-2."""

    def __init__(self, uri: str, database: str) -> None:
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri)
        self.coll = self.client[database]["live"]
        self.done = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        while not self.stop.is_set():
            if k % 3 == 0:
                self.coll.insert_one({"_id": BASE + k, "k": k})
            elif k % 3 == 1:
                self.coll.update_one({"_id": k % SEEDED}, {"$set": {"k": k}})
            else:
                self.coll.delete_one({"_id": BASE + k - 2})
            k += 1
            self.done = k


def seeded_document(i: int) -> dict[str, Any]:
    return {"_id": i, "v": f"seed {i}", "pad": "p" * (i % 40)}


def expected_state(ops: int) -> list[bytes]:
    """The collection after the writer's ops 0..ops-1, as BSON sorted by _id."""
    docs = {i: seeded_document(i) for i in range(SEEDED)}
    for k in range(ops):
        if k % 3 == 0:
            docs[BASE + k] = {"_id": BASE + k, "k": k}
        elif k % 3 == 1:
            docs[k % SEEDED]["k"] = k  # a new field goes last, an existing one stays in place
        else:
            del docs[BASE + k - 2]
    return [bson.encode(docs[i]) for i in sorted(docs)]


def op_number(entry: dict[str, Any]) -> int:
    """Which writer op an oplog entry records."""
    if entry["op"] == "i":
        return int(entry["o"]["k"])
    if entry["op"] == "u":
        return int(entry["o"]["$set"]["k"])
    return int(entry["o"]["_id"]) - BASE + 2


def apply_entries(uri: str, database: str, entries: list[bytes]) -> None:
    """A minimal applier for FerretDB's i/u/d entries (mongorestore needs applyOps)."""
    with MongoClient(uri) as client:
        for raw in entries:
            entry = bson.decode(raw)
            coll = client[database][entry["ns"].split(".", 1)[1]]
            if entry["op"] == "i":
                coll.replace_one({"_id": entry["o"]["_id"]}, entry["o"], upsert=True)
            elif entry["op"] == "u":
                assert entry["o"]["$v"] == 1 and set(entry["o"]) == {"$v", "$set"}
                coll.update_one(entry["o2"], {"$set": entry["o"]["$set"]}, upsert=True)
            else:
                assert entry["op"] == "d", entry
                coll.delete_one(entry["o"])


def extract(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "dump"


@pytest.mark.parametrize("range_size", [0, 4096], ids=["one-cursor", "id-ranges"])
async def test_backup_oplog_restores_to_its_consistent_point(
    mongo_oplog_uri: str,
    mongo_uri: str,
    tmp_path: Path,
    range_size: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Read with one cursor or (~24 KB in 4 KiB) as _id ranges at once: the same
    consistency, none, and the oplog member brings either to its last_ts."""
    caplog.set_level("INFO", logger="mongosnap.backup")
    database = f"pitr_{uuid.uuid4().hex[:10]}"
    with MongoClient(mongo_oplog_uri) as client:
        client[database]["live"].insert_many([seeded_document(i) for i in range(SEEDED)])
    writer = KeyedWriter(mongo_oplog_uri, database)
    writer.thread.start()
    wait_for(lambda: writer.done > 30, "the writer to start")
    try:
        result = await mongosnap.backup(
            mongo_oplog_uri,
            str(tmp_path / "out"),
            database=database,
            oplog=True,
            batch_size=20,
            range_size=range_size,
        )
    finally:
        writer.stop.set()
        writer.thread.join(WAIT)
        writer.client.close()
    assert result.oplog is not None
    assert ("_id ranges" in caplog.text) == (range_size > 0)
    archive = tmp_path / "out" / result.archive_key
    manifest = Manifest.from_json((tmp_path / "out" / result.manifest_key).read_bytes())
    assert manifest.oplog is not None
    first, last = Ts(*manifest.oplog.first_ts), Ts(*manifest.oplog.last_ts)
    dump = extract(archive, tmp_path / "x")

    # the member holds, byte for byte, the server's entries of that window and database
    captured = split_bson((dump / "oplog.bson").read_bytes())
    window = [e for e in server_entries(mongo_oplog_uri) if first <= ts_of(e) <= last]
    assert captured == [e for e in window if bson.decode(e)["ns"] == f"{database}.live"]
    assert manifest.oplog.entries == len(captured) > 0, "no write overlapped the dump"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names.index("dump/oplog.bson") == names.index("mongosnap/manifest.json") - 1

    # restore the collections with the real mongorestore, then replay the member
    target = f"restored_{uuid.uuid4().hex[:10]}"
    restore = subprocess.run(
        [
            *(str(tools_dir() / "mongorestore"), "--uri", mongo_uri, "--dir", str(dump)),
            *("--nsFrom", f"{database}.*", "--nsTo", f"{target}.*"),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert restore.returncode == 0, restore.stderr
    apply_entries(mongo_uri, target, captured)

    # expected: the seed plus every writer op up to the last one the window holds
    ops = max(op_number(bson.decode(e)) for e in captured) + 1
    restored = sorted(
        server_documents(mongo_uri, target, "live"), key=lambda d: bson.decode(d)["_id"]
    )
    assert restored == expected_state(ops)
    with MongoClient(mongo_uri) as client:
        client.drop_database(target)

    report = await mongosnap.verify(str(tmp_path / "out"), result.archive_key)
    assert report.ok, report.problems


async def test_mongorestore_oplog_replay_needs_applyops_which_ferretdb_lacks(
    mongo_oplog_uri: str, mongo_uri: str, tmp_path: Path
) -> None:
    """A fact of the test bed, kept under test: the member is well-formed (bsondump
    reads every entry), mongorestore reaches the replay, and FerretDB refuses it."""
    database = f"pitr_{uuid.uuid4().hex[:10]}"
    writer = KeyedWriter(mongo_oplog_uri, database)
    with MongoClient(mongo_oplog_uri) as client:
        client[database]["live"].insert_many([seeded_document(i) for i in range(SEEDED)])
    writer.thread.start()
    wait_for(lambda: writer.done > 30, "the writer to start")
    try:
        done = await asyncio.to_thread(
            run_cli, "backup", str(tmp_path / "out"), mongo_oplog_uri, database, "--oplog"
        )
    finally:
        writer.stop.set()
        writer.thread.join(WAIT)
        writer.client.close()
    assert done.returncode == 0, done.stderr
    assert "entries in dump/oplog.bson, consistent at ts" in done.stdout
    archive = next((tmp_path / "out").glob("*.tar.gz"))
    dump = extract(archive, tmp_path / "x")
    sidecar = json.loads(Path(str(archive) + ".manifest.json").read_text())
    dumped = subprocess.run(
        [str(tools_dir() / "bsondump"), str(dump / "oplog.bson")],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert dumped.returncode == 0, dumped.stderr
    assert len(dumped.stdout.splitlines()) == sidecar["oplog"]["entries"] > 0
    replay = subprocess.run(
        [
            str(tools_dir() / "mongorestore"),
            "--uri",
            mongo_uri,
            "--oplogReplay",
            "--dir",
            str(dump),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert "replaying oplog" in replay.stderr
    assert "no such command: 'applyOps'" in replay.stderr
    with MongoClient(mongo_uri) as client:  # (--oplogReplay refuses --nsFrom/--nsTo)
        client.drop_database(database)
    assert replay.returncode != 0


def test_backup_oplog_without_an_oplog_is_a_usage_error(
    mongo_uri: str, tmp_path: Path, new_database: str
) -> None:
    with MongoClient(mongo_uri) as client:
        client[new_database]["c"].insert_one({"a": 1})
    done = run_cli("backup", str(tmp_path), mongo_uri, new_database, "--oplog", "-q")
    assert done.returncode == 2, done.stderr
    assert "keeps no oplog: local.oplog.rs does not exist" in done.stderr
    assert list(tmp_path.iterdir()) == []


def _manifest_with_oplog(tmp_path: Path, mongo_oplog_uri: str) -> dict[str, Any]:
    database = f"pitr_{uuid.uuid4().hex[:10]}"
    with MongoClient(mongo_oplog_uri) as client:
        client[database]["c"].insert_one({"a": 1})
    done = run_cli("backup", str(tmp_path), mongo_oplog_uri, database, "--oplog", "--json")
    assert done.returncode == 0, done.stderr
    sidecar = next(tmp_path.glob("*.manifest.json"))
    return dict(json.loads(sidecar.read_text()))


def test_manifest_oplog_window_round_trips_and_is_checked(
    tmp_path: Path, mongo_oplog_uri: str
) -> None:
    raw = _manifest_with_oplog(tmp_path, mongo_oplog_uri)
    manifest = Manifest.from_json(json.dumps(raw).encode())
    assert manifest.oplog is not None and manifest.oplog.member.name == "dump/oplog.bson"
    assert json.loads(manifest.to_json()) == raw
    without = {k: v for k, v in raw.items() if k != "oplog"}  # older manifests still parse
    assert Manifest.from_json(json.dumps(without).encode()).oplog is None
    bad = json.loads(json.dumps(raw))
    bad["oplog"]["member"]["name"] = "dump/other.bson"
    with pytest.raises(CorruptArchive, match="oplog"):
        Manifest.from_json(json.dumps(bad).encode())
    bad = json.loads(json.dumps(raw))
    bad["oplog"]["first_ts"], bad["oplog"]["last_ts"] = raw["oplog"]["last_ts"], {"t": 0, "i": 0}
    with pytest.raises(CorruptArchive, match="oplog"):
        Manifest.from_json(json.dumps(bad).encode())


class OplogFinds(monitoring.CommandListener):
    """The find commands sent to local.oplog.rs, in order."""

    def __init__(self) -> None:
        self.finds: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command["find"] == "oplog.rs":
            self.finds.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_backup_oplog_reads_the_oplog_twice_and_ends_at_the_newest_entry_read(
    new_oplog_server: Any, tmp_path: Path
) -> None:
    """FerretDB decodes its whole oplog for every find on it (docs/benchmarks.md):
    the newest entry before the dump, then one ts-bounded read in oplog order
    whose newest entry, of any namespace, is the consistent point."""
    uri, database = new_oplog_server(1 << 20), f"pitr_{uuid.uuid4().hex[:10]}"
    with MongoClient(uri) as client:
        client[database]["live"].insert_many([seeded_document(i) for i in range(SEEDED)])
    other = MongoClient(uri)
    written: list[Any] = []

    def write_elsewhere(event: Progress) -> None:  # during the dump, once
        if event.stage is Stage.DONE and not written:
            written.append(other["elsewhere"]["c"].insert_one({"during": 1}).inserted_id)

    listener = OplogFinds()
    source: AsyncMongoClient[Any] = AsyncMongoClient(uri, event_listeners=[listener])
    try:
        result = await mongosnap.backup(
            source, str(tmp_path), database=database, oplog=True, progress=write_elsewhere
        )
    finally:
        await source.close()
        other.close()
    assert written and result.oplog is not None
    manifest = Manifest.from_json((tmp_path / result.manifest_key).read_bytes())
    assert manifest.oplog is not None
    first, last = Ts(*manifest.oplog.first_ts), Ts(*manifest.oplog.last_ts)
    entries = server_entries(uri)
    assert last == ts_of(entries[-1]) > first  # the other database's entry ends the window
    assert bson.decode(entries[-1])["ns"] == "elsewhere.c"
    assert len(listener.finds) == 2, listener.finds
    newest, window = listener.finds
    assert newest["sort"] == {"$natural": -1} and newest["limit"] == 1
    assert window["filter"] == {"ts": {"$gte": first.to_bson()}}  # no upper bound read
    assert window["oplogReplay"] is True and "sort" not in window
    assert manifest.oplog.entries == 1  # the window's start, the last seeded insert


async def test_backup_oplog_fails_when_its_start_rolled_out_of_the_oplog(
    new_oplog_server: Any, tmp_path: Path
) -> None:
    """The entry the window starts at was trimmed during the dump: entries are
    missing, so no archive is written."""
    uri, database = new_oplog_server(64 * 1024), f"pitr_{uuid.uuid4().hex[:10]}"
    with MongoClient(uri) as client:
        client[database]["live"].insert_many([seeded_document(i) for i in range(SEEDED)])
    start = newest_ts(uri)
    filler = MongoClient(uri)

    def roll_over(event: Progress) -> None:  # during the dump: until start is trimmed
        if event.stage is not Stage.DONE or ts_of(server_entries(uri)[0]) > start:
            return

        def trimmed() -> bool:
            filler["filler"]["c"].insert_many([{"pad": "x" * 1000} for _ in range(20)])
            return ts_of(server_entries(uri)[0]) > start

        wait_for(trimmed, "FerretDB to trim the oplog past the window's start")

    try:
        with pytest.raises(mongosnap.SourceError, match="rolled over during the backup"):
            await mongosnap.backup(
                uri, str(tmp_path), database=database, oplog=True, progress=roll_over
            )
    finally:
        filler.close()
    assert list(tmp_path.iterdir()) == []
