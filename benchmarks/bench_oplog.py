"""Oplog archiving under a steady write load: lag and peak memory of `mongosnap oplog`.

    .venv/bin/python benchmarks/bench_oplog.py --seconds 120 --rate 200 --interval 1

Starts the test bed (its oplog FerretDB), runs ``python -m mongosnap oplog
DEST --uri URI --interval I`` as its own process into a local directory, and
writes ``--rate`` inserts per second (about 300-byte documents) for
``--seconds``. Then:

- lag, per entry: the time its chunk's sidecar was committed (the file's
  mtime: the chunk is complete from then on) minus the entry's ``wall`` time
  (the server's clock when it wrote the entry; same machine);
- peak RSS of the archiver process (VmHWM from /proc, read before SIGTERM);
- that every entry written is archived once (a check, not a figure): after
  the load stops, the benchmark waits until a chunk holds the newest entry.

Figures go to stdout.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)
from bson import decode  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from mongosnap.oplog import chunks  # noqa: E402


def _write(uri: str, rate: float, seconds: float, written: list[int]) -> None:
    """Inserts at a steady pace; the count goes to written[0]."""
    with MongoClient(uri) as client:
        coll = client.bench_oplog.events
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < seconds:
            target = int(elapsed * rate)
            while n < target:
                coll.insert_one({"n": n, "pad": "x" * 256})
                n += 1
            time.sleep(0.005)
        written[0] = n


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _newest(uri: str) -> tuple[int, int]:
    with MongoClient(uri) as client:
        last = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    assert last is not None
    return (last["ts"].time, last["ts"].inc)


def _covered(dest: Path) -> tuple[int, int]:
    """The largest last_ts of the complete chunks so far."""
    best = (0, 0)
    for side in (dest / "oplog").glob("*.bson.gz.json") if (dest / "oplog").exists() else []:
        info = chunks.ChunkInfo.from_json(side.read_bytes(), str(side.relative_to(dest)))
        best = max(best, (info.last_ts.t, info.last_ts.i))
    return best


def _lags(dest: Path) -> tuple[list[float], int]:
    """Lag of every archived entry of the benchmark's collection, and their count."""
    lags: list[float] = []
    for side in sorted((dest / "oplog").glob("*.bson.gz.json")):
        key = str(side.relative_to(dest))
        info = chunks.ChunkInfo.from_json(side.read_bytes(), key)
        committed = side.stat().st_mtime
        raw = chunks.decode_chunk((dest / info.object_key).read_bytes(), info)
        for entry in chunks.split_entries(raw):
            doc = decode(entry)
            if doc["ns"] == "bench_oplog.events":
                lags.append(committed - doc["wall"].timestamp())
    return lags, len(lags)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the write load")
    parser.add_argument("--rate", type=float, default=200.0, help="inserts per second")
    parser.add_argument("--interval", type=float, default=1.0, help="archiver chunk interval")
    args = parser.parse_args()
    testbed.build()
    with testbed.Testbed() as bed, tempfile.TemporaryDirectory() as tmp:
        uri, dest = bed.mongo_oplog_uri, Path(tmp)
        argv = [sys.executable, "-m", "mongosnap", "oplog", str(dest), "--uri", uri]
        argv += ["--interval", str(args.interval), "--start", "oldest", "-q"]  # a fresh oplog
        proc = subprocess.Popen(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        time.sleep(2.0)  # let it open its cursor
        written = [0]
        writer = threading.Thread(target=_write, args=(uri, args.rate, args.seconds, written))
        writer.start()
        writer.join()
        newest = _newest(uri)
        caught_up = time.monotonic()
        while _covered(dest) < newest:  # until the last entry's chunk is committed
            time.sleep(0.1)
        catch_up = time.monotonic() - caught_up
        peak = _peak_rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        lags, archived = _lags(dest)
    lags.sort()
    print(f"command: {' '.join(sys.argv)}")
    print(f"load: {written[0]} inserts in {args.seconds:.0f}s ({written[0] / args.seconds:.0f}/s)")
    print(f"archived: {archived} of them (exit {code} on SIGTERM)")
    if lags:
        p95 = lags[int(0.95 * (len(lags) - 1))]
        print(
            f"lag (entry written -> chunk committed), interval {args.interval}s: "
            f"median {statistics.median(lags):.2f}s, p95 {p95:.2f}s, max {lags[-1]:.2f}s"
        )
    print(f"archiver peak RSS: {peak:.1f} MB over {args.seconds:.0f}s")
    print(f"caught up {catch_up:.1f}s after the load stopped")
    return 0 if archived == written[0] else 1


if __name__ == "__main__":
    sys.exit(main())
