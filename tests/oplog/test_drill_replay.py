"""A drill replays the archived oplog onto its scratch copies, up to what is archived.

On the oplog FerretDB: an archive taken with ``--oplog`` while the archiver
runs, then inserts, updates and deletes, all archived as chunks. The drill's
checks pass (they compare the copies with the archive, before the replay);
after its replay the copies equal the live collections, so ``--compare-live``
reports no drift, and a write made after the archiver stopped is drift.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oplog_support import ArchiverProcess, newest_ts
from pymongo import MongoClient

import mongosnap


def test_the_drill_replays_the_archived_oplog_to_its_end(
    new_oplog_server: Callable[[int], str], tmp_path: Path
) -> None:
    # A server of its own: the shared one holds so many databases that the
    # drill's listDatabases (looking for stopped drills' leftovers) takes minutes.
    uri, dest = new_oplog_server(8 << 20), tmp_path / "store"
    database = f"drill_{uuid.uuid4().hex[:10]}"
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    coll = client[database]["live"]
    coll.insert_many([{"_id": i, "v": i} for i in range(200)])
    archiver = ArchiverProcess(dest, uri, "--interval", "0.5", "--start", "oldest", "--settle", "0")
    try:
        archiver.wait_read_past(newest_ts(uri))
        archived = asyncio.run(mongosnap.backup(uri, str(dest), database=database, oplog=True))
        coll.insert_many([{"_id": 1000 + i, "v": "new"} for i in range(20)])
        for i in range(5):
            coll.update_one({"_id": i}, {"$set": {"v": "changed"}})
        coll.delete_many({"_id": {"$in": [10, 11, 12]}})
        archiver.wait_read_past(newest_ts(uri))
    finally:
        assert archiver.terminate() == 143
    assert archived.oplog is not None
    try:
        report = asyncio.run(mongosnap.drill(uri, dest, database=database, compare_live=True))
        assert report.ok, report.failures
        assert [(c.name, c.documents) for c in report.collections] == [("live", 200)]
        assert report.oplog_replayed >= 28
        assert report.replayed_to is not None
        assert report.drift == []

        coll.delete_one({"_id": 50})  # not archived: the replay cannot reach it
        late = asyncio.run(mongosnap.drill(uri, dest, database=database, compare_live=True))
        assert late.ok and late.drift is not None
        assert [(d["name"], d["deleted"]) for d in late.drift] == [("live", 1)]
    finally:
        client.drop_database(database)
        client.close()
