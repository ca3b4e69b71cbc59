"""One large collection: one cursor against ``_id`` ranges read at once.

    .venv/bin/python benchmarks/bench_ranges.py --uri mongodb://HOST/ --server-pid PID \\
        --documents 150000 --rounds 1 p1=1,0 p2=2,0 p2-ranged=2,33554432

Seeds ``rangebench.big`` (about 660-byte documents, ObjectId ``_id``s) unless
``--no-seed``, then backs it up once per contender per round, each in its own
process, contenders alternated: ``NAME=PARALLEL,RANGE_SIZE`` (bytes; 0: one
cursor). Prints wall seconds, the backup's CPU seconds and, with
``--server-pid``, the server process's CPU seconds over the run (from
/proc/PID/stat). With ``--probe``: how long the ranged plan's commands and one
empty range take alone, and what ``explain`` says of an ``_id`` range.
Figures: docs/benchmarks.md, "Ranged reads".
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient

ONE_BACKUP = """
import asyncio, sys
from mongosnap import backup
parallel, size, dest, uri = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
asyncio.run(backup(uri, dest, database="rangebench", codec="zstd", parallel=parallel,
                   range_size=size))
"""


def seed(uri: str, documents: int) -> None:
    with MongoClient(uri) as client:
        coll = client.rangebench.big
        coll.drop()
        pad = os.urandom(300).hex()
        for start in range(0, documents, 5000):
            stop = min(documents, start + 5000)
            coll.insert_many([{"i": i, "s": f"doc {i}", "pad": pad} for i in range(start, stop)])
        print("collStats size", client.rangebench.command("collStats", "big")["size"])


def server_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(uri: str, pid: int | None, name: str, parallel: str, size: str) -> None:
    dest = tempfile.mkdtemp(prefix="bench-ranges-")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    served, start = server_cpu(pid), time.perf_counter()
    argv = [sys.executable, "-c", ONE_BACKUP, parallel, size, dest, uri]
    subprocess.run(argv, check=True)
    wall, served = time.perf_counter() - start, server_cpu(pid) - served
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    shutil.rmtree(dest)
    load = os.getloadavg()[0]
    print(
        f"{name:12} wall {wall:7.2f}s  cpu {cpu:5.2f}s  server cpu {served:6.2f}s  load {load:.1f}"
    )


def probe(uri: str) -> None:
    with MongoClient(uri) as client:
        db = client.rangebench

        def timed(label: str, call: Callable[[], Any]) -> Any:
            start = time.perf_counter()
            value = call()
            print(f"{label:30} {time.perf_counter() - start:6.2f}s")
            return value

        timed("collStats", lambda: db.command("collStats", "big"))
        low = timed("smallest _id", lambda: db.big.find({}, {"_id": 1}).sort("_id", 1).limit(1)[0])
        timed("largest _id", lambda: db.big.find({}, {"_id": 1}).sort("_id", -1).limit(1)[0])
        timed("all, one cursor", lambda: sum(map(len, db.big.find_raw_batches())))
        empty = {"_id": {"$lt": low["_id"]}}
        timed("an empty range", lambda: sum(map(len, db.big.find_raw_batches(empty))))
        plan = db.command("explain", {"find": "big", "filter": empty})
        print({k: v for k, v in plan.items() if k in ("queryPlanner", "filterPushdown")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--documents", type=int, default=150_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("contenders", nargs="+", metavar="NAME=PARALLEL,RANGE_SIZE")
    args = parser.parse_args()
    if not args.no_seed:
        seed(args.uri, args.documents)
    if args.probe:
        probe(args.uri)
    contenders = [(c.split("=")[0], *c.split("=")[1].split(",")) for c in args.contenders]
    for turn in range(args.rounds):
        for name, parallel, size in contenders if turn % 2 == 0 else contenders[::-1]:
            run(args.uri, args.server_pid, name, parallel, size)


if __name__ == "__main__":
    main()
