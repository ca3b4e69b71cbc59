"""heal --restore-missing of a shrunk collection: the deletes undone with the
oplog, against the archive's missing documents without it.

    .venv/bin/python benchmarks/bench_heal_undo.py [--documents 20000] [--size 1000]
        [--deleted 2000] [--uri mongodb://... (a server keeping an oplog)]

Without --uri it starts a private FerretDB that keeps an oplog, on the running
test bed ($MONGOSNAP_TESTBED_STATE) or a test bed it starts (scripts/testbed.py).
The collection is filled with ``--documents`` documents of about ``--size``
bytes, archived with ``backup --oplog`` while ``mongosnap oplog`` runs; a bad
``deleteMany`` then removes ``--deleted`` documents spread over it. Measured,
each once, figures to stdout: heal with the oplog (the deletes undone); then,
the same documents deleted again, heal from a copy of the destination without
``oplog/`` (the archive's missing documents).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)

import mongosnap  # noqa: E402
from mongosnap.oplog.chunks import read_coverage  # noqa: E402
from mongosnap.oplog.position import Ts  # noqa: E402
from mongosnap.storage import LocalStorage  # noqa: E402

COLLECTION = "big"
SERVER = f"ferretdb-bench-heal-{uuid.uuid4().hex[:8]}"
OPLOG_SIZE = 512 << 20


def _newest(uri: str) -> Ts:
    with MongoClient(uri) as client:
        entry = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    assert entry is not None
    return Ts.from_bson(entry["ts"])


def _archived_to(dest: Path) -> Ts:
    coverage = asyncio.run(read_coverage(LocalStorage(str(dest))))
    return max((s.last for s in coverage.spans), default=Ts(0, 0))


def _wait_archived(dest: Path, ts: Ts) -> None:
    deadline = time.monotonic() + 900
    while _archived_to(dest) < ts:
        if time.monotonic() > deadline:
            raise SystemExit(f"the archiver did not reach {ts}")
        time.sleep(0.5)


def _deleted(documents: int, deleted: int) -> list[int]:
    """The ``_id``s the bad deleteMany removes: spread over the collection."""
    return list(range(0, documents, max(documents // deleted, 1)))[:deleted]


def _prepared(uri: str, documents: int, size: int, deleted: int) -> tuple[Path, str]:
    """An archive of the filled collection, then the bad deleteMany, archived."""
    dest = Path(tempfile.mkdtemp(prefix="bench-heal-undo-"))
    database = f"bench_heal_{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "mongosnap", "oplog", str(dest), "--uri", uri]
    archiver = subprocess.Popen(
        [*argv, "--interval", "1", "--start", "now", "--settle", "0", "-q"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        time.sleep(2)  # the archiver's cursor is open before the first write
        with MongoClient(uri) as client:
            coll = client[database][COLLECTION]
            for start in range(0, documents, 1000):
                stop = min(start + 1000, documents)
                coll.insert_many([{"_id": i, "pad": _text(size - 30)} for i in range(start, stop)])
            asyncio.run(mongosnap.backup(uri, str(dest), database=database, oplog=True))
            coll.delete_many({"_id": {"$in": _deleted(documents, deleted)}})
        _wait_archived(dest, _newest(uri))
    finally:
        archiver.send_signal(signal.SIGTERM)
        archiver.wait(timeout=120)
    return dest, database


def _text(length: int) -> str:
    """Random text: compresses as real data does, not to nothing."""
    return base64.b64encode(os.urandom(max(length, 4) * 3 // 4)).decode()


def run(uri: str, documents: int, size: int, deleted: int) -> None:
    dest, database = _prepared(uri, documents, size, deleted)
    bare = Path(tempfile.mkdtemp(prefix="bench-heal-bare-"))
    shutil.copytree(dest, bare, dirs_exist_ok=True, ignore=shutil.ignore_patterns("oplog"))
    options: dict[str, Any] = {"database": database, "collections": [COLLECTION]}
    options |= {"restore_missing": True, "shrink_threshold": 50 * deleted / documents}
    print(f"collection: {documents:,} documents of ~{size} B; {deleted:,} deleted")
    for name, where in (("with the oplog", dest), ("archive only", bare)):
        started = time.perf_counter()
        report = asyncio.run(mongosnap.heal(uri, str(where), **options))
        seconds = time.perf_counter() - started
        [damage] = report.damaged
        print(
            f"heal --restore-missing {name:15} {seconds:7.2f} s  "
            f"source {damage.source}, {damage.inserted:,} inserted"
        )
        with MongoClient(uri) as client:  # the same loss again for the next run
            client[database][COLLECTION].delete_many({"_id": {"$in": _deleted(documents, deleted)}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1000, help="bytes per document (about)")
    parser.add_argument("--deleted", type=int, default=2000, help="documents the bad write deletes")
    parser.add_argument("--uri", help="a server keeping an oplog (default: start one)")
    args = parser.parse_args()
    figures = (args.documents, args.size, args.deleted)
    if args.uri:
        run(args.uri, *figures)
        return
    state = os.environ.get(testbed.STATE_ENV)
    if state:  # a running test bed: start only the private oplog server on it
        running = testbed.Testbed.from_state(Path(state), owned=False)
        try:
            run(running.start_oplog_ferretdb(SERVER, OPLOG_SIZE), *figures)
        finally:
            running.stop_server(SERVER)
        return
    testbed.build()
    with testbed.Testbed() as bed:
        run(bed.start_oplog_ferretdb(SERVER, OPLOG_SIZE), *figures)


if __name__ == "__main__":
    main()
