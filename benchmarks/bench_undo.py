"""Undo of N documents of a large collection, against a point-in-time restore of it.

    .venv/bin/python benchmarks/bench_undo.py [--documents 20000] [--size 1000]
        [--touched 500] [--uri mongodb://... (a server keeping an oplog)]

Without --uri it starts a private FerretDB that keeps an oplog, on the running
test bed ($MONGOSNAP_TESTBED_STATE) or a test bed it starts (scripts/testbed.py).
The collection is filled with ``--documents`` documents of about ``--size``
bytes, archived with ``backup --oplog`` while ``mongosnap oplog`` runs; then a
bad ``deleteMany`` removes ``--touched`` documents spread over the collection.
Measured, each once, figures to stdout: undo ``--dry-run``, undo (stage: the
pre-images as a new collection), undo ``--apply``; and ``restore --to-ts`` of
the same collection to the window's start, into another database (what one
would do without undo). Bytes fetched from storage are printed beside the
collection's data member and the whole archive.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
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
from mongosnap.oplog.chunks import ChunkInfo  # noqa: E402
from mongosnap.oplog.position import Ts  # noqa: E402

COLLECTION = "big"
SERVER = f"ferretdb-bench-undo-{uuid.uuid4().hex[:8]}"
OPLOG_SIZE = 512 << 20


def _newest(uri: str) -> Ts:
    with MongoClient(uri) as client:
        entry = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    assert entry is not None
    return Ts.from_bson(entry["ts"])


def _archived_to(dest: Path) -> Ts | None:
    found = [
        ChunkInfo.from_json(p.read_bytes(), str(p.relative_to(dest)))
        for p in (dest / "oplog").glob("*.bson.*.json")
    ]
    return max((c.last_ts for c in found), default=None)


def _wait_archived(dest: Path, ts: Ts) -> None:
    deadline = time.monotonic() + 900
    while (_archived_to(dest) or Ts(0, 0)) < ts:
        if time.monotonic() > deadline:
            raise SystemExit(f"the archiver did not reach {ts}")
        time.sleep(0.2)


def _fill(uri: str, database: str, documents: int, size: int, name: str = COLLECTION) -> None:
    """Documents of random text (compressing as real data does, not to nothing)."""
    with MongoClient(uri) as client:
        coll = client[database][name]
        for start in range(0, documents, 1000):
            stop = min(start + 1000, documents)
            coll.insert_many(
                [{"_id": i, "n": i, "pad": _text(size - 40)} for i in range(start, stop)]
            )


def _text(length: int) -> str:
    return base64.b64encode(os.urandom(max(length, 4) * 3 // 4)).decode()


def _timed(work: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = asyncio.run(work)
    return result, time.perf_counter() - started


def run(uri: str, documents: int, size: int, touched: int) -> None:
    dest = Path(tempfile.mkdtemp(prefix="bench-undo-"))
    database = f"bench_undo_{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "mongosnap", "oplog", str(dest), "--uri", uri]
    archiver = subprocess.Popen(
        [*argv, "--interval", "1", "--start", "now", "--settle", "0", "-q"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        time.sleep(2)  # the archiver's cursor is open before the first write
        _fill(uri, database, documents, size)
        _fill(uri, database, documents // 2, size, "other")  # in the archive, never read
        backup = asyncio.run(mongosnap.backup(uri, str(dest), database=database, oplog=True))
        first = Ts(_newest(uri).t, _newest(uri).i + 1)
        step = max(documents // touched, 1)
        with MongoClient(uri) as client:
            client[database][COLLECTION].delete_many(
                {"_id": {"$in": list(range(0, documents, step))[:touched]}}
            )
        last = _newest(uri)
        _wait_archived(dest, last)
    finally:
        archiver.send_signal(signal.SIGTERM)
        archiver.wait(timeout=120)
    common: dict[str, Any] = {"database": database, "collection": COLLECTION, "start": first}
    common["end"] = last
    dry, dry_s = _timed(mongosnap.undo(uri, str(dest), mode="dry_run", **common))
    staged, stage_s = _timed(mongosnap.undo(uri, str(dest), mode="stage", **common))
    applied, apply_s = _timed(mongosnap.undo(uri, str(dest), mode="apply", **common))
    restored, restore_s = _timed(
        mongosnap.restore(
            uri,
            str(dest),
            database=database,
            collections=[COLLECTION],
            to_database=f"{database}_pitr",
            to_ts=Ts(first.t, first.i - 1),
        )
    )
    member = (dest / backup.archive_key).stat().st_size
    print(f"collection: {documents:,} documents of ~{size} B; archive {member:,} B compressed")
    print(f"window: {dry.touched:,} documents touched ({dry.deleted:,} deleted)")
    print(f"collection data member: {dry.member_bytes:,} B compressed")
    for name, report, seconds in (
        ("undo --dry-run", dry, dry_s),
        ("undo (stage)", staged, stage_s),
        ("undo --apply", applied, apply_s),
    ):
        print(f"{name:16} {seconds:7.2f} s  fetched {report.bytes_fetched:,} B")
    print(f"{'restore --to-ts':16} {restore_s:7.2f} s  fetched {restored.bytes_fetched:,} B")
    print(f"applied: {applied.restored:,} restored, {applied.conflicts:,} conflicts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1000, help="bytes per document (about)")
    parser.add_argument("--touched", type=int, default=500, help="documents the bad write deletes")
    parser.add_argument("--uri", help="a server keeping an oplog (default: start one)")
    args = parser.parse_args()
    figures = (args.documents, args.size, args.touched)
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
