"""Tripwire lag: from a deleteMany's return to the trip's log line of `mongosnap oplog`.

    .venv/bin/python benchmarks/bench_tripwire.py --documents 2000 --rounds 5
    .venv/bin/python benchmarks/bench_tripwire.py --stage --interval 60 --rounds 5

Uses the running test bed's oplog FerretDB when $MONGOSNAP_TESTBED_STATE names
one (else starts a test bed). Runs ``python -m mongosnap oplog DEST --uri URI
--start now -v --tripwire DB.*:deletes>N-1/60s`` as its own process. Each
round fills a new collection with ``--documents`` documents, waits until the
archiver has read their inserts, runs ``deleteMany({})`` and measures the
time from its return to the archiver's ``tripwire ... tripped`` line on
stderr (the rule trips on the last delete, so the whole burst is counted).
With ``--stage`` the archiver runs with ``--stage``, each round takes a
``backup --oplog`` of the database before its deleteMany, and the time to the
``pre-images staged as`` line is measured too (trip -> staged collection
published). Figures go to stdout; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)
from pymongo import MongoClient  # noqa: E402

WAIT = 120.0
OPLOG_BYTES = 64 << 20


@contextlib.contextmanager
def _oplog_uri(shared: bool) -> Iterator[str]:
    """A FerretDB of its own with a fresh oplog (its size: OPLOG_BYTES), or with
    ``shared`` the test bed's oplog FerretDB, as the tests leave it."""
    state = os.environ.get(testbed.STATE_ENV)
    with contextlib.ExitStack() as stack:
        if state:
            bed = testbed.Testbed.from_state(Path(state), owned=False)
        else:
            testbed.build()
            bed = stack.enter_context(testbed.Testbed())
        if shared:
            yield bed.mongo_oplog_uri
            return
        name = f"ferretdb-bench-trip-{uuid.uuid4().hex[:8]}"
        uri = bed.start_oplog_ferretdb(name, OPLOG_BYTES)
        try:
            yield uri
        finally:
            bed.stop_server(name)


class _Lines:
    """The archiver's stderr, each line with the monotonic time it arrived."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[tuple[float, str]] = queue.Queue()
        assert proc.stderr is not None
        threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.queue.put((time.monotonic(), line))

    def until(self, test: Any) -> tuple[float, str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                when, line = self.queue.get(timeout=0.5)
                if test(line):
                    return when, line
        raise SystemExit("the archiver did not log what was awaited")


def _round(
    coll: Any, lines: _Lines, documents: int, stage: tuple[str, str] | None
) -> tuple[float, ...]:
    """(deleteMany returned -> trip logged, last entry read -> trip logged[, trip
    logged -> staged logged, last chunk stored -> staged logged]). ``stage``: the
    URI and destination to back up to."""
    coll.insert_many([{"_id": i, "pad": "x" * 200} for i in range(documents)])
    read = 0

    def counts_reads(line: str) -> bool:
        nonlocal read
        if " read " in line and " entries up to " in line:
            read += int(line.split(" read ", 1)[1].split()[0])
        return read >= documents

    lines.until(counts_reads)  # every insert read: the deletes are all that is left
    if stage is not None:
        import mongosnap

        asyncio.run(mongosnap.backup(stage[0], stage[1], database=coll.database.name, oplog=True))
    coll.delete_many({})
    done = time.monotonic()
    read_at = done

    def trip(line: str) -> bool:
        nonlocal read_at
        if " read " in line and " entries up to " in line:
            read_at = time.monotonic()
        return "tripwire" in line and coll.name in line

    tripped, _ = lines.until(trip)
    if stage is None:
        return tripped - done, tripped - read_at
    stored = tripped

    def staging(line: str) -> bool:
        nonlocal stored
        if "oplog chunk " in line:
            stored = time.monotonic()
        return "--stage for" in line and coll.name in line

    staged, line = lines.until(staging)
    if "pre-images staged as" not in line:
        raise SystemExit(f"the staging did not succeed: {line}")
    return tripped - done, tripped - read_at, staged - tripped, staged - stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=2000, help="documents deleted per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--shared", action="store_true", help="use the test bed's oplog FerretDB, not a fresh one"
    )
    parser.add_argument("--stage", action="store_true", help="also measure trip -> staged")
    parser.add_argument("--interval", default="1", help="the archiver's --interval (default 1)")
    args = parser.parse_args()
    database = f"bench_trip_{uuid.uuid4().hex[:8]}"
    with (
        _oplog_uri(args.shared) as uri,
        tempfile.TemporaryDirectory() as tmp,
        MongoClient(uri) as client,
    ):
        spec = f"{database}.*:deletes>{args.documents - 1}/60s"
        dest = str(Path(tmp) / "dest")
        argv = [sys.executable, "-m", "mongosnap", "oplog", dest, "--uri", uri, "--start", "now"]
        argv += ["--interval", args.interval, "-v", "--tripwire", spec]
        argv += ["--stage"] if args.stage else []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        lines = _Lines(proc)
        try:
            probe = client[database].probe
            while True:  # "now" is taken once the archiver reads a first entry
                probe.insert_one({})
                with contextlib.suppress(queue.Empty):
                    if " read " in lines.queue.get(timeout=1.0)[1]:
                        break
            stage = (uri, dest) if args.stage else None
            figures = [
                _round(client[database][f"c{n}"], lines, args.documents, stage)
                for n in range(args.rounds)
            ]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            client.drop_database(database)
    print(f"command: {' '.join(sys.argv)}")
    which = "the test bed's" if args.shared else "a fresh"
    print(f"rule: {spec} on {which} oplog FerretDB, {args.rounds} rounds")
    rows = [
        (f"deleteMany of {args.documents} returned -> trip logged", [f[0] for f in figures]),
        ("of which: the last entry read -> trip logged", [f[1] for f in figures]),
    ]
    if args.stage:
        rows.append((f"trip logged -> {args.documents} pre-images staged", [f[2] for f in figures]))
        rows.append(("of which: window's chunk stored -> staged (undo)", [f[3] for f in figures]))
    for label, lags in rows:
        print(
            f"{label}: median {statistics.median(lags) * 1000:.0f} ms, "
            f"min {min(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
