"""What one command costs on the test bed's FerretDB, by collection count.

    .venv/bin/python benchmarks/bench_commands.py [--collections 500] [--repeat 50]

Starts FerretDB (scripts/testbed.py), creates N small collections, then times
the commands a backup or restore sends per collection, one after another
through PyMongo: the per-collection cost behind the `many` case of bench.py
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import testbed


def timed(label: str, step: Callable[[int], object], repeat: int) -> None:
    started = time.perf_counter()
    for i in range(repeat):
        step(i)
    print(f"| {label} | {(time.perf_counter() - started) / repeat * 1000:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    n, repeat = args.collections, args.repeat
    with testbed.Testbed() as bed:
        client: MongoClient[dict[str, Any]] = MongoClient(bed.mongo_uri)
        db = client["commands"]
        for i in range(n):
            db[f"c{i:05d}"].insert_many([{"i": j, "x": "y" * 900} for j in range(20)])

        def name(i: int) -> str:
            return f"c{i % n:05d}"

        print(f"| command ({n} collections) | ms |\n| --- | ---: |")
        timed(
            "listCollections, two names",
            lambda i: list(db.list_collections(filter={"name": {"$in": [name(i), name(i + 1)]}})),
            repeat,
        )
        timed("listCollections, all", lambda i: list(db.list_collections()), max(1, repeat // 5))
        timed("listIndexes", lambda i: list(db[name(i)].list_indexes()), repeat)
        timed("find, one batch", lambda i: list(db[name(i)].find_raw_batches()), repeat)
        timed("collStats", lambda i: db.command("collStats", name(i)), repeat)
        timed("ping", lambda i: client.admin.command("ping"), repeat)
        timed(
            "create + drop",
            lambda i: (db.create_collection(f"t{i}"), db.drop_collection(f"t{i}")),
            max(1, repeat // 2),
        )
        timed(
            "create + rename + drop",
            lambda i: (
                db.create_collection(f"a{i}"),
                db[f"a{i}"].rename(f"b{i}"),
                db.drop_collection(f"b{i}"),
            ),
            max(1, repeat // 2),
        )
        client.close()


if __name__ == "__main__":
    main()
