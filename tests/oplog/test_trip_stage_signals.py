"""SIGTERM while ``oplog --tripwire ... --stage`` stages an undo: the archiver
exits 143; the staging either finishes within the close grace and publishes
``COLL_undo_<time>`` complete, or is cancelled and its staging copy dropped.
Never a half-built collection under either name; the archived chunks intact.

The point is held at a proxy before the oplog FerretDB: the staging copy's
first insert, until released: at once, or once the staging is cancelled
(the insert lands late: it must not leave the copy re-created)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from faultproxy import FaultProxy, Hold
from helpers import run_cli, server_documents
from oplog_support import WAIT, ArchiverProcess
from pymongo import MongoClient

import mongosnap
from mongosnap.pipelines.staging import TEMP_PREFIX
from mongosnap.pipelines.trip_stage import CLOSE_GRACE

STAGING_INSERT = (b"\x02insert\x00", TEMP_PREFIX.encode())
"""An OP_MSG insert into a staging copy: its command and the copy's name."""


def _by_id(documents: list[bytes]) -> dict[object, bytes]:
    return {bson.decode(d)["_id"]: d for d in documents}


@pytest.fixture(scope="module")
def oplog_uri(testbed: Any) -> Iterator[str]:
    """One oplog FerretDB for both cases: each has its own database and destination."""
    name = f"ferretdb-oplog-{uuid.uuid4().hex[:8]}"
    yield str(testbed.start_oplog_ferretdb(name, 16 << 20))
    testbed.stop_server(name)


def _wait_held(held: Hold, archiver: ArchiverProcess) -> None:
    for _ in range(int(30 / 0.01)):
        if held.reached.wait(0.01):
            return
        assert archiver.proc.poll() is None, "the archiver ended before staging"
    archiver.proc.terminate()
    rest = [archiver.lines.get() for _ in range(archiver.lines.qsize())]
    raise AssertionError(f"the staging never inserted:\n{''.join(archiver.log + rest)}")


@pytest.mark.parametrize("release", ["at once", "after the cancel"])
def test_sigterm_mid_staging_publishes_whole_or_drops_the_copy(
    tmp_path: Path, oplog_uri: str, release: str
) -> None:
    uri = oplog_uri
    port = int(uri.rsplit(":", 1)[1].split("/")[0])
    database, dest = f"stage_{uuid.uuid4().hex[:10]}", tmp_path / "dest"
    with MongoClient(uri) as client, FaultProxy(("127.0.0.1", port)) as proxy:
        coll = client[database]["coll"]
        coll.insert_many([{"_id": i, "group": i % 3, "pad": "x" * i} for i in range(60)])
        archiver = ArchiverProcess(
            dest, f"mongodb://{proxy.address}/?directConnection=true",  # not around the proxy
            "--start", "now", "--interval", "3600", "--settle", "1",
            "--tripwire", f"{database}.coll:deletes>30/60s", "--stage",
        )  # fmt: skip
        try:
            archiver.wait_line("oplog reader ready")
            # an entry after the archiver's start: the backup's point is archived
            coll.update_one({"_id": 59}, {"$set": {"pad": "changed"}})
            asyncio.run(mongosnap.backup(uri, str(dest), database=database, oplog=True))
            before = _by_id(server_documents(uri, database, "coll"))
            # the window starts at its first delete's whole second: after the backup's
            time.sleep(1.05 - time.time() % 1)
            held = proxy.hold("up", *STAGING_INSERT)
            coll.delete_many({"group": {"$lt": 2}})  # 40 documents: the rule trips
            _wait_held(held, archiver)
            archiver.proc.send_signal(signal.SIGTERM)
            if release == "at once":
                held.release()  # the staging finishes within the close grace
                said = ""
            else:  # the insert lands late, after the staging was cancelled
                said = archiver.wait_line("--stage still running")
                held.release()
            code = archiver.proc.wait(timeout=WAIT + CLOSE_GRACE)
        finally:
            archiver.proc.kill()
        proxy.settle()  # the late insert has landed
        names = sorted(client[database].list_collection_names())

    if release == "at once":
        said = archiver.wait_line("pre-images staged as")
    assert code == 143, archiver.log
    assert "Traceback" not in "".join(archiver.log)
    assert not [n for n in names if n.startswith(TEMP_PREFIX)], names  # the copy dropped
    deleted = {i: before[i] for i in range(60) if i % 3 < 2}
    if release == "at once":
        [undo_name] = [n for n in names if n.startswith("coll_undo_")]
        assert _by_id(server_documents(uri, database, undo_name)) == deleted  # complete
    else:
        assert names == ["coll"], names
        assert f"--stage still running after {CLOSE_GRACE:.0f} s: cancelled" in said
    listed = run_cli("oplog", str(dest), "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    coverage = json.loads(listed.stdout)
    assert coverage["gaps"] == coverage["incomplete"] == coverage["unusable"] == [], coverage
    assert len(coverage["spans"]) == 1 and coverage["spans"][0]["entries"] >= 40, coverage
