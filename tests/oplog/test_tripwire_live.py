"""`mongosnap oplog --tripwire` on the oplog FerretDB: a mass delete trips it,
the log, the metrics and the --on-trip command say so, and a collection name
full of shell syntax reaches the command as data only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from oplog_support import WAIT, ArchiverProcess
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from mongosnap import backup
from mongosnap.oplog.archiver import archive_oplog
from mongosnap.oplog.tripwire import Trip, Tripwires, parse, read_baseline

RECORD = (
    "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
    "if k.startswith('MONGOSNAP_TRIP_')}, open(sys.argv[1], 'w'))"
)


def _until_reading(archiver: ArchiverProcess, coll: object) -> None:
    """Insert single documents until the archiver (started at "now") reads one."""
    deadline = time.monotonic() + WAIT
    n = 0
    while time.monotonic() < deadline:
        coll.insert_one({"_id": f"probe{n}"})  # type: ignore[attr-defined]
        n += 1
        try:
            while True:
                line = archiver.lines.get(timeout=1.0)
                archiver.log.append(line)
                if "read " in line:
                    return
        except queue.Empty:
            continue
    raise AssertionError("the archiver never read an entry:\n" + "".join(archiver.log))


def test_a_mass_delete_trips_log_metrics_and_command(
    tmp_path: Path, new_oplog_server: Callable[[int], str]
) -> None:
    mongo_oplog_uri = new_oplog_server(16 << 20)  # its own: the shared oplog is long to scan
    database = f"trip_{uuid.uuid4().hex[:10]}"
    hostile = f"x;touch {tmp_path}/PWN1;`touch {tmp_path}/PWN2`\nnext"
    record, prom = tmp_path / "trip.json", tmp_path / "trip.prom"
    with MongoClient(mongo_oplog_uri) as client:
        coll = client[database][hostile]
        coll.insert_many([{"_id": i, "v": "x" * 10} for i in range(40)])
        archiver = ArchiverProcess(
            tmp_path / "dest", mongo_oplog_uri, "--start", "now", "--interval", "1",
            "--tripwire", f"{database}.*:deletes>30/60s",
            "--on-trip", f"{sys.executable} -c \"{RECORD}\" {record}",
            "--metrics-file", str(prom),
        )  # fmt: skip
        try:
            _until_reading(archiver, coll)
            coll.update_many({}, {"$set": {"v": "y"}})  # updates do not count as deletes
            assert not any("tripwire" in line for line in archiver.log)
            coll.delete_many({})
            line = archiver.wait_line("tripwire")
            deadline = time.monotonic() + WAIT
            while not record.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            assert archiver.terminate() == 143
            client.drop_database(database)
    assert "warning: tripwire" in line and "deletes>30/60s" in line and "60 s window" in line
    assert repr(f"{database}.{hostile}") in line
    env = json.loads(record.read_text())
    assert env["MONGOSNAP_TRIP_NAMESPACE"] == f"{database}.{hostile}"
    assert env["MONGOSNAP_TRIP_RULE"] == "deletes>30/60s"
    assert int(env["MONGOSNAP_TRIP_COUNT"]) == 31  # tripped on the 31st delete
    for key in ("MONGOSNAP_TRIP_WINDOW_START", "MONGOSNAP_TRIP_WINDOW_END"):
        assert env[key].endswith("Z") and env[key][:2] == "20"
    assert not (tmp_path / "PWN1").exists() and not (tmp_path / "PWN2").exists()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }
    labels = (("command", "oplog"), ("namespace", f"{database}.{hostile}"))
    assert found[("mongosnap_tripwire_trips_total", (*labels, ("rule", "deletes>30/60s")))] == 1
    last = found[("mongosnap_tripwire_last_trip_timestamp_seconds", (("command", "oplog"),))]
    assert abs(last - time.time()) < 3600


async def test_shrink_counts_from_the_newest_archive(
    tmp_path: Path, new_oplog_server: Callable[[int], str]
) -> None:
    """shrink>20%/2s trips on the delete that takes more than 20 % of the count at
    the window start: 100 archived + 20 inserted before the window, so the 25th
    delete. The archiver reads the whole (fresh) oplog: a backlog counts by ts."""
    uri = new_oplog_server(16 << 20)
    database = f"trip_{uuid.uuid4().hex[:10]}"
    dest = tmp_path / "dest"
    trips: list[Trip] = []
    with MongoClient(uri) as client:
        coll = client[database].users
        coll.insert_many([{"_id": i} for i in range(100)])
        time.sleep(1.1)  # the archive's point (the end of its dump) is a later second
        await backup(uri, str(dest), database=database)
        coll.insert_many([{"_id": f"new{i}"} for i in range(20)])
        time.sleep(3.2)  # the inserts' seconds are out of the deletes' 2 s window
        coll.delete_many({"_id": {"$lt": 24}})  # 24 of 120: 20 %, not above
        coll.delete_one({"_id": 99})
        wires = Tripwires([parse(f"{database}.*:shrink>20%/2s")], trips.append)
        task = asyncio.create_task(archive_oplog(uri, str(dest), interval=1, tripwires=wires))
        try:
            deadline = time.monotonic() + WAIT
            while not trips and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert wires.baseline is not None
    assert wires.baseline.counts[f"{database}.users"][0] == 100
    [trip] = trips
    assert (trip.namespace, trip.count, trip.base) == (f"{database}.users", 25, 120)


async def test_shrink_counts_follow_a_newer_archive(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    """keep_baseline reads the archives again: a backup taken while it runs
    becomes the count shrink starts from."""
    from mongosnap.oplog.tripwire import keep_baseline
    from mongosnap.storage import open_storage

    dest = tmp_path / "dest"
    with MongoClient(mongo_uri) as client:
        coll = client[new_database].users
        coll.insert_many([{"_id": i} for i in range(10)])
        await backup(mongo_uri, str(dest), database=new_database)
        storage = open_storage(str(dest))
        wires = Tripwires([parse(f"{new_database}.users:shrink>20%")])
        wires.baseline = await read_baseline(storage, {new_database})
        assert wires.baseline.counts[f"{new_database}.users"][0] == 10
        task = asyncio.create_task(keep_baseline(wires, storage, every=0.05))
        try:
            time.sleep(1.1)  # the next archive's name (its second) differs
            coll.insert_many([{"_id": i} for i in range(10, 25)])
            await backup(mongo_uri, str(dest), database=new_database)
            deadline = time.monotonic() + WAIT
            while wires.baseline.counts[f"{new_database}.users"][0] != 25:
                assert time.monotonic() < deadline, "the newer archive was never read"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await storage.aclose()
