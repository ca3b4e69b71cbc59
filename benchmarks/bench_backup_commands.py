"""The commands one backup sends to the test bed's FerretDB, per collection.

    .venv/bin/python benchmarks/bench_backup_commands.py [--collections 500]
    PYTHONPATH=/tmp/base benchmarks/bench_backup_commands.py   # another mongosnap tree

Starts FerretDB (scripts/testbed.py), creates N small collections (20
documents of about 1 KB), backs them up to a temporary directory through an
AsyncMongoClient whose CommandListener counts what is sent, and prints the
count of each command, per collection, and the backup's wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, MongoClient, monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import testbed

import mongosnap


class Counting(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def counted_backup(uri: str, out: str) -> tuple[Counter[str], float]:
    listener = Counting()
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri, event_listeners=[listener])
    try:
        started = time.perf_counter()
        await mongosnap.backup(client, out, database="commands")
        wall = time.perf_counter() - started
    finally:
        await client.close()
    return listener.sent, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", type=int, default=500)
    args = parser.parse_args()
    n = args.collections
    print(f"mongosnap from {Path(mongosnap.__file__).parent}")
    with testbed.Testbed() as bed, tempfile.TemporaryDirectory() as out:
        with MongoClient(bed.mongo_uri) as client:
            db = client["commands"]
            for i in range(n):
                db[f"c{i:05d}"].insert_many([{"i": j, "x": "y" * 900} for j in range(20)])
        sent, wall = asyncio.run(counted_backup(bed.mongo_uri, out))
    print(f"| command ({n} collections) | sent | per collection |\n| --- | ---: | ---: |")
    for name, count in sorted(sent.items()):
        print(f"| {name} | {count} | {count / n:.3f} |")
    print(f"| all | {sum(sent.values())} | {sum(sent.values()) / n:.3f} |")
    print(f"backup wall: {wall:.2f} s ({wall / n * 1000:.2f} ms per collection)")


if __name__ == "__main__":
    main()
