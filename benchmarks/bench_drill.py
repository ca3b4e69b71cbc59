"""Restore drill and diff times on FerretDB: what the drill's checks cost beside its restore.

    .venv/bin/python benchmarks/bench_drill.py --uri mongodb://127.0.0.1:27017/ [--documents 20000]

Without --uri it starts the test bed (scripts/testbed.py) and uses its
FerretDB (SQLite). A database of two collections (documents of about 1 kB,
and a tenth as many small ones) is backed up into a temporary directory,
then drilled (restore into a scratch database, checks, drop) and diffed
against the live database. Figures go to stdout: the drill's RTO (restore
only), its whole duration (checks, which read the archive and the restored
copy again, and the drop included) and the diff's (archive and live read).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)

from mongosnap import backup, diff, drill  # noqa: E402


def seed(uri: str, database: str, documents: int) -> None:
    with MongoClient(uri) as client:
        db = client[database]
        for start in range(0, documents, 1000):
            end = min(documents, start + 1000)
            db.big.insert_many([{"_id": n, "pad": "x" * 1000, "n": n} for n in range(start, end)])
        db.small.insert_many([{"s": n} for n in range(max(1, documents // 10))])
        db.big.create_index("n", name="by_n")


async def measure(uri: str, documents: int) -> None:
    database = f"bench_drill_{uuid.uuid4().hex[:8]}"
    seed(uri, database, documents)
    try:
        with tempfile.TemporaryDirectory() as store:
            result = await backup(uri, store, database=database)
            report = await drill(uri, store, database=database, record=False)
            assert report.ok, report.failures
            started = time.monotonic()
            compared = await diff(store, "latest", "live", database=database, source=uri)
            took = time.monotonic() - started
            assert compared.same
    finally:
        with MongoClient(uri) as client:
            client.drop_database(database)
    size = result.bytes_in / 1e6
    print(f"documents {result.documents}, BSON {size:.1f} MB")
    rate = size / report.rto_seconds
    print(f"drill RTO (restore)     {report.rto_seconds:7.2f} s  {rate:6.1f} MB/s")
    print(f"drill total (checks...) {report.duration:7.2f} s")
    print(f"diff latest live        {took:7.2f} s  {size / took:6.1f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="MongoDB URI (default: start the test bed)")
    parser.add_argument("--documents", type=int, default=20000)
    args = parser.parse_args()
    if args.uri:
        asyncio.run(measure(args.uri, args.documents))
        return
    testbed.build()
    with testbed.Testbed() as bed:
        asyncio.run(measure(bed.mongo_uri, args.documents))


if __name__ == "__main__":
    main()
