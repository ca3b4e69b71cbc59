"""Undo of N documents of a large collection, against a point-in-time restore of it.

    .venv/bin/python benchmarks/bench_undo.py [--documents 20000] [--size 1000]
        [--other 10000] [--touched 500] [--updated N] [--batch-size 100]
        [--apply-batch-size N] [--apply-limit 0]
        [--uri mongodb://... (a server keeping an oplog)]

Without --uri it starts a private FerretDB, on the running test bed
($MONGOSNAP_TESTBED_STATE) or a test bed it starts (scripts/testbed.py), and
fills the collection (``--documents`` documents of about ``--size`` bytes of
random text) and a second one (``--other`` documents, in the archive, never
read by undo) BEFORE it creates the FerretDB's oplog: FerretDB logs nothing
until ``local.oplog.rs`` exists, so the seed is not in the oplog and the
archiver (which rescans FerretDB's whole oplog per read) only drains the
window. With --uri the seed goes through the server's oplog.

Then, as a user would: ``mongosnap oplog`` running, ``backup --oplog``, and a
bad window: a ``deleteMany`` and an ``updateMany`` (overwriting a field)
touching ``--touched`` documents spread over the collection, ``--updated``
of them updated (default half; FerretDB's SQLite backend scans the table for
each document an update writes, so keep it small on a large collection).
Measured, each once and each as its own CLI process (wall, CPU and peak RSS
of that process; bytes fetched from its --json report): undo (stage),
``--dry-run``, ``restore --to-ts`` of the collection to the window's start
into another database (what one would do without undo), and ``--apply``
(last; ``--apply-limit S`` stops it with SIGTERM after S seconds and counts
what it had written). Printed as a markdown table beside the collection's
data member and the whole archive.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)

from mongosnap.oplog.chunks import ChunkInfo  # noqa: E402
from mongosnap.oplog.position import Ts  # noqa: E402

COLLECTION = "big"
SERVER = f"ferretdb-bench-undo-{uuid.uuid4().hex[:8]}"
OPLOG_SIZE = 512 << 20
BAD = "overwritten by a bad updateMany"
MB = 1e6


@dataclass
class Measured:
    """One CLI run: its --json report (None: stopped or failed) and its costs."""

    report: dict[str, Any] | None
    wall: float
    cpu: float
    rss_mib: float
    exit_code: int


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
    deadline = time.monotonic() + 1800
    while (_archived_to(dest) or Ts(0, 0)) < ts:
        if time.monotonic() > deadline:
            raise SystemExit(f"the archiver did not reach {ts}")
        time.sleep(0.5)


def _fill(uri: str, database: str, name: str, documents: int, size: int) -> None:
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


def _cli(args: list[str], limit: float = 0) -> Measured:
    """Run ``mongosnap ARGS --json`` as its own process; SIGTERM after ``limit`` s."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "mongosnap", *args, "--json"], stdout=out)
        if limit:
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
        # wait4: the child's own CPU and peak RSS, not this process's
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode().strip()
    report = json.loads(text.splitlines()[-1]) if text and proc.returncode == 0 else None
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(report, wall, cpu, usage.ru_maxrss / 1024, proc.returncode)


def _bad_window(uri: str, database: str, args: argparse.Namespace) -> tuple[int, int]:
    """A deleteMany of every ``step``th document, and an updateMany overwriting a
    field of ``--updated`` others spread over the collection."""
    updated = args.touched // 2 if args.updated is None else args.updated
    step = max(args.documents // max(args.touched - updated, 1), 2)
    spread = args.documents // max(updated, 1)
    ids = [k * spread // step * step + step // 2 for k in range(updated)]  # never deleted
    with MongoClient(uri) as client:
        coll = client[database][COLLECTION]
        deleted = coll.delete_many({"n": {"$mod": [step, 0]}}).deleted_count
        changed = coll.update_many({"n": {"$in": ids}}, {"$set": {"pad": BAD}}).modified_count
    return deleted, changed


def run(
    uri: str,
    args: argparse.Namespace,
    create_oplog: Callable[[], None] | None = None,
) -> None:
    dest = Path(tempfile.mkdtemp(prefix="bench-undo-"))
    database = f"bench_undo_{uuid.uuid4().hex[:8]}"
    oplog = [sys.executable, "-m", "mongosnap", "oplog", str(dest), "--uri", uri]
    oplog += ["--interval", "1", "--settle", "0", "-q"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    archiver = None
    if create_oplog is None:  # the seed goes through the oplog: archived from now
        archiver = subprocess.Popen([*oplog, "--start", "now"], env=env)
        time.sleep(2)  # the archiver's cursor is open before the first write
    try:
        started = time.perf_counter()
        _fill(uri, database, COLLECTION, args.documents, args.size)
        _fill(uri, database, "other", args.other, args.size)  # in the archive, never read
        seeded = time.perf_counter() - started
        if create_oplog is not None:
            create_oplog()
        marker: MongoClient[dict[str, Any]]
        with MongoClient(uri) as marker:  # an entry for backup --oplog's consistent point
            marker[database]["marker"].insert_one({"_id": "seeded"})
        if archiver is None:  # the oplog holds the marker and what follows: all of it
            archiver = subprocess.Popen([*oplog, "--start", "oldest"], env=env)
        _step("backup --oplog")
        backup = _cli(["backup", "--uri", uri, str(dest), database, "--oplog"])
        assert backup.report is not None, "backup failed"
        newest = _newest(uri)
        first = Ts(newest.t, newest.i + 1)
        _done("backup --oplog", backup)
        _step("the bad window")
        deleted, updated = _bad_window(uri, database, args)
        last = _newest(uri)
        _step("waiting for the archiver")
        _wait_archived(dest, last)
    finally:
        if archiver is not None:
            archiver.send_signal(signal.SIGTERM)
            archiver.wait(timeout=120)
    undo = ["undo", str(dest), "--uri", uri, database, COLLECTION]
    undo += ["--from", f"{first.t}:{first.i}", "--to", f"{last.t}:{last.i}"]
    _step("undo (stage)")
    staged = _cli(undo)
    _done("undo (stage)", staged)
    before = Ts(first.t, first.i - 1)
    restore = ["restore", _key(backup), str(dest), "--uri", uri, database, "-c", COLLECTION]
    restore += ["--to-database", f"{database}_pitr", "--to-ts", f"{before.t}:{before.i}"]
    _step("restore --to-ts")
    restored = _cli(restore)
    _done("restore --to-ts", restored)
    _step("undo --dry-run")
    dry = _cli([*undo, "--dry-run", "--batch-size", str(args.batch_size)])
    _done("undo --dry-run", dry)
    _step("undo --apply")
    apply_batch = args.apply_batch_size or args.batch_size
    applied = _cli([*undo, "--apply", "--batch-size", str(apply_batch)], args.apply_limit)
    archive = sum(_archive_files(dest))
    _print(args, seeded, backup, staged, dry, restored, applied, archive, (deleted, updated))
    _print_apply(uri, database, applied, args.documents, (deleted, updated))
    shutil.rmtree(dest)


def _archive_files(dest: Path) -> list[int]:
    """Sizes of the archive and its sidecars (everything but the oplog chunks)."""
    return [p.stat().st_size for p in dest.rglob("*") if p.is_file() and "oplog" not in p.parts]


def _done(name: str, m: Measured) -> None:
    """A run's figures at once on stderr (a long run can be watched, or stopped)."""
    fetched = None if m.report is None else m.report.get("bytes_fetched")
    _step(
        f"{name}: {m.wall:.1f} s wall, {m.cpu:.1f} s CPU, {m.rss_mib:.0f} MiB, "
        f"fetched {fetched}, exit {m.exit_code}; {json.dumps(m.report)[:600]}"
    )


def _step(name: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {name}", file=sys.stderr, flush=True)


def _key(backup: Measured) -> str:
    assert backup.report is not None
    return str(backup.report.get("archive_key") or backup.report["key"])


def _print(
    args: argparse.Namespace,
    seeded: float,
    backup: Measured,
    staged: Measured,
    dry: Measured,
    restored: Measured,
    applied: Measured,
    archive: int,
    window: tuple[int, int],
) -> None:
    report = staged.report or dry.report
    assert report is not None, "undo failed"
    print(
        f"collection: {args.documents:,} documents of ~{args.size} B (seeded with "
        f"{args.other:,} others in {seeded:.0f} s, before the oplog existed)"
    )
    print(
        f"archive (backup --oplog): {archive / MB:,.1f} MB on disk; backup "
        f"{backup.wall:.1f} s wall, {backup.cpu:.1f} s CPU"
    )
    print(f"collection data member: {report['member_bytes'] / MB:,.1f} MB compressed")
    print(
        f"window: {window[0]:,} deleted + {window[1]:,} updated; undo saw "
        f"{report['touched']:,} touched ({report['deleted']:,} deleted, "
        f"{report['updated']:,} updated), {report['oplog_entries']:,} entries"
    )
    print("| run | wall s | CPU s | peak RSS MiB | fetched MB | exit |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, m in (
        ("undo (stage)", staged),
        (f"undo --dry-run (batch {args.batch_size})", dry),
        ("restore --to-ts (collection, other database)", restored),
        (f"undo --apply (batch {args.apply_batch_size or args.batch_size})", applied),
    ):
        fetched = "-" if m.report is None else f"{_fetched(m.report) / MB:,.1f}"
        print(
            f"| {name} | {m.wall:.1f} | {m.cpu:.1f} | {m.rss_mib:.0f} | {fetched} | {m.exit_code} |"
        )


def _fetched(report: dict[str, Any]) -> int:
    found = report.get("bytes_fetched")
    if found is None:  # restore: per collection, or a total under another name
        found = report.get("fetched_bytes", 0)
    return int(found)


def _print_apply(
    uri: str, database: str, applied: Measured, documents: int, window: tuple[int, int]
) -> None:
    if applied.report is not None:
        print(
            f"applied: {applied.report['restored']:,} restored, "
            f"{applied.report['conflicts']:,} conflicts"
        )
        return
    deleted, updated = window
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:  # stopped: count what it wrote from the collection
        coll = client[database][COLLECTION]
        back = coll.count_documents({}) - (documents - deleted)
        written = updated - coll.count_documents({"pad": BAD})
    print(
        f"apply stopped (exit {applied.exit_code}) after {applied.wall:.0f} s: "
        f"{back:,} of {deleted:,} deleted and {written:,} of {updated:,} updated "
        "documents written back"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1000, help="bytes per document (about)")
    parser.add_argument(
        "--other", type=int, default=10_000, help="documents of the other collection"
    )
    parser.add_argument("--touched", type=int, default=500, help="documents the bad window writes")
    parser.add_argument(
        "--updated", type=int, help="of --touched, documents updated (default half; others deleted)"
    )
    parser.add_argument("--batch-size", type=int, default=100, help="undo's --batch-size")
    parser.add_argument("--apply-batch-size", type=int, help="--apply's (default --batch-size)")
    parser.add_argument("--apply-limit", type=float, default=0, help="stop --apply after S s")
    parser.add_argument("--uri", help="a server keeping an oplog (default: start one)")
    args = parser.parse_args()
    if args.uri:
        run(args.uri, args)
        return
    state = os.environ.get(testbed.STATE_ENV)
    if state:  # a running test bed: start only the private oplog server on it
        running = testbed.Testbed.from_state(Path(state), owned=False)
        try:
            uri, create = _private(running)
            run(uri, args, create)
        finally:
            running.stop_server(SERVER)
        return
    testbed.build()
    with testbed.Testbed() as bed:
        uri, create = _private(bed)
        run(uri, args, create)


def _private(bed: testbed.Testbed) -> tuple[str, Callable[[], None]]:
    """A FerretDB without an oplog yet, and what creates it."""
    uri = bed.start_oplog_ferretdb(SERVER, OPLOG_SIZE, oplog=False)
    port = urlsplit(uri).port
    assert port is not None

    def create() -> None:
        if not testbed.mongo_create_capped(port, "local", "oplog.rs", OPLOG_SIZE):
            raise SystemExit("could not create local.oplog.rs")

    return uri, create


if __name__ == "__main__":
    main()
