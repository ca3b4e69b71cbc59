"""Oplog replay rate (entries/s) onto FerretDB, per kind of entry.

    .venv/bin/python benchmarks/bench_replay.py [--entries 5000] [--uri mongodb://...]

Without --uri it starts the test bed (scripts/testbed.py) and uses its
FerretDB (SQLite). Entries are hand-built in MongoDB's shapes and replayed as
raw BSON, the way they come out of an oplog chunk, one phase at a time:

- inserts: documents of about 300 bytes;
- updates ($v:2 diffs): a field set, a field inserted, an array element set;
  each reads its document from the server, since the inserts were flushed;
- updates ($v:1 $set): the same documents again;
- deletes: every document;
- mixed: insert, two updates and a delete per document, all in one batch
  window (updates read through the batch, not the server).

Each phase is timed around one ``replay()`` call; figures go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
from bson import Int64
from bson.timestamp import Timestamp
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)

from mongosnap.oplog import replay  # noqa: E402

DATABASE = "bench_replay"


def _entry(n: int, op: str, ns: str, o: dict[str, Any], o2: Any = None) -> bytes:
    doc: dict[str, Any] = {"ts": Timestamp(1_700_000_000 + n // 1000, n % 1000 + 1)}
    doc.update({"t": Int64(1), "v": 2, "op": op, "ns": ns, "o": o})
    if o2 is not None:
        doc["o2"] = {"_id": o2}
    return bson.encode(doc)


def _document(i: int) -> dict[str, Any]:
    return {
        "_id": i,
        "name": f"unit-{i:08d}",
        "app": "tsuru-" + "x" * 120,
        "count": Int64(i),
        "tags": ["web", "worker", "cron"],
        "meta": {"pool": "default", "team": "core", "zone": i % 7},
    }


def inserts(ns: str, count: int) -> list[bytes]:
    return [_entry(i, "i", ns, _document(i)) for i in range(count)]


def diffs(ns: str, count: int) -> list[bytes]:
    d = {"u": {"name": "renamed"}, "i": {"seen": True}, "stags": {"a": True, "u1": "api"}}
    return [_entry(i, "u", ns, {"$v": 2, "diff": d}, i) for i in range(count)]


def sets(ns: str, count: int) -> list[bytes]:
    o = {"$v": 1, "$set": {"meta.zone": 99, "count": Int64(0)}}
    return [_entry(i, "u", ns, o, i) for i in range(count)]


def deletes(ns: str, count: int) -> list[bytes]:
    return [_entry(i, "d", ns, {"_id": i}) for i in range(count)]


def mixed(ns: str, count: int) -> list[bytes]:
    out = []
    for i in range(count // 4):
        out.append(_entry(4 * i, "i", ns, _document(i)))
        out.append(_entry(4 * i + 1, "u", ns, {"$v": 2, "diff": {"u": {"name": "m"}}}, i))
        out.append(_entry(4 * i + 2, "u", ns, {"$v": 1, "$set": {"meta.zone": 1}}, i))
        out.append(_entry(4 * i + 3, "d", ns, {"_id": i}))
    return out


PHASES: list[tuple[str, Callable[[str, int], list[bytes]]]] = [
    ("inserts", inserts),
    ("updates $v:2 diff", diffs),
    ("updates $v:1 $set", sets),
    ("deletes", deletes),
    ("mixed i/u/u/d", mixed),
]


async def measure(uri: str, count: int) -> list[tuple[str, int, float]]:
    ns = f"{DATABASE}.units"
    rows = []
    for name, build in PHASES:
        entries = build(ns, count)
        start = time.perf_counter()
        report = await replay(uri, entries)
        seconds = time.perf_counter() - start
        assert report.entries == len(entries), report
        rows.append((name, len(entries), seconds))
    return rows


def run(uri: str, count: int) -> None:
    with MongoClient(uri) as client:
        client.drop_database(DATABASE)
    try:
        rows = asyncio.run(measure(uri, count))
    finally:
        with MongoClient(uri) as client:
            client.drop_database(DATABASE)
    print(f"{'phase':<20} {'entries':>8} {'seconds':>8} {'entries/s':>10}")
    for name, entries, seconds in rows:
        print(f"{name:<20} {entries:>8} {seconds:>8.2f} {entries / seconds:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=5000, help="entries per phase")
    parser.add_argument("--uri", help="a running server (default: start the test bed)")
    args = parser.parse_args()
    if args.uri:
        run(args.uri, args.entries)
        return
    testbed.build()
    with testbed.Testbed() as bed:
        run(bed.mongo_uri, args.entries)


if __name__ == "__main__":
    main()
