"""backup --max-rate: the read rate achieved against the cap, and what the cap
spares a concurrent application.

    .venv/bin/python benchmarks/bench_max_rate.py [--mib 32] [--caps 2,5,10] [--uri URI]

Starts FerretDB (scripts/testbed.py) unless --uri is given, seeds a database
with --mib MiB of ~1 KB documents plus a small ``app`` collection, then:

1. backs the database up to a temporary directory uncapped and with each cap
   (MB/s, 10^6 bytes), printing the BSON bytes read per second of backup;
2. runs an "application" in another process (its own interpreter: no shared
   GIL) doing find_one by a random _id in a loop, and prints its latency p50
   and p95 with no backup, during an uncapped backup and during a capped one
   (the lowest cap).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import testbed

import mongosnap

DATABASE = "bench_max_rate"
"""The database seeded (dropped first), --database."""
APP_DOCUMENTS = 1000
IDLE_SECONDS = 3.0


def seed(uri: str, database: str, mib: int) -> None:
    with MongoClient(uri) as client:
        client.drop_database(database)
        db = client[database]
        filler = "x" * 1000
        count = mib * 1024
        for start in range(0, count, 5000):
            db.data.insert_many(
                [{"i": i, "x": filler} for i in range(start, min(count, start + 5000))]
            )
        db.app.insert_many([{"_id": i, "v": "y" * 200} for i in range(APP_DOCUMENTS)])


def application(uri: str, database: str, stop: Any, out: Any) -> None:
    """find_one by _id in a loop until ``stop``; sends the latencies (seconds)."""
    latencies = []
    with MongoClient(uri) as client:
        app = client[database].app
        app.find_one({"_id": 0})  # connected before the clock starts
        while not stop.is_set():
            key = random.randrange(APP_DOCUMENTS)
            started = time.perf_counter()
            app.find_one({"_id": key})
            latencies.append(time.perf_counter() - started)
    out.put(latencies)


@contextlib.contextmanager
def app_running(uri: str, database: str) -> Iterator[list[float]]:
    """An application process for the block; its latencies fill the list after."""
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=application, args=(uri, database, stop, out))
    proc.start()
    time.sleep(1.0)  # its interpreter started and connected
    found: list[float] = []
    try:
        yield found
    finally:
        stop.set()
        found.extend(out.get(timeout=60))
        proc.join(timeout=60)


def backup(uri: str, database: str, cap_mb: float) -> tuple[float, int]:
    """(seconds, BSON bytes read) of one backup of the database."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = asyncio.run(
            mongosnap.backup(uri, out, database=database, include=["data"], max_rate=cap_mb * 1e6)
        )
        return time.perf_counter() - started, report.bytes_in


def percentiles(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return f"{p50:.2f} | {p95:.2f} | {len(ms)}"


def run(uri: str, database: str, mib: int, caps: list[float]) -> None:
    seed(uri, database, mib)
    print(f"mongosnap from {Path(mongosnap.__file__).parent}; {mib} MiB of ~1 KB documents")
    print("\n| cap (MB/s) | backup s | read MB/s | achieved / cap |\n| ---: | ---: | ---: | ---: |")
    for cap in [0.0, *caps]:
        wall, size = backup(uri, database, cap)
        rate = size / wall / 1e6
        ratio = f"{rate / cap:.2f}" if cap else "-"
        print(f"| {cap or 'none'} | {wall:.2f} | {rate:.2f} | {ratio} |")
    print("\n| application find_one by _id | p50 ms | p95 ms | queries |")
    print("| --- | ---: | ---: | ---: |")
    with app_running(uri, database) as idle:
        time.sleep(IDLE_SECONDS)
    print(f"| no backup | {percentiles(idle)} |")
    with app_running(uri, database) as uncapped:
        backup(uri, database, 0.0)
    print(f"| uncapped backup | {percentiles(uncapped)} |")
    with app_running(uri, database) as capped:
        backup(uri, database, min(caps))
    print(f"| backup --max-rate {min(caps):g} | {percentiles(capped)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=32, help="MiB of documents to back up")
    parser.add_argument("--caps", default="2,5,10", help="caps in MB/s, comma-separated")
    parser.add_argument("--uri", help="a running server (default: start FerretDB)")
    parser.add_argument("--database", default=DATABASE, help="database to seed (dropped first)")
    args = parser.parse_args()
    caps = [float(c) for c in args.caps.split(",")]
    if args.uri:
        run(args.uri, args.database, args.mib, caps)
        return
    with testbed.Testbed() as bed:
        run(bed.mongo_uri, args.database, args.mib, caps)


if __name__ == "__main__":
    main()
