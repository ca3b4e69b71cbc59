"""What learning a legacy archive's databases costs (no server needed).

    .venv/bin/python benchmarks/legacy_databases.py [--mib 64]

Two legacy ``tar -czf`` archives of --mib MiB each (incompressible data), one
of database ``a`` and a newer one of ``b``, in a counting MemoryStorage.
Prints the bytes read by learn_databases (prune: every legacy archive to its
end) and by newest_archives(database=...) (heal: an archive of another
database to its end, one of the watched database up to its first member).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tarfile
import time
from collections.abc import AsyncIterator

from mongosnap import MemoryStorage
from mongosnap.catalog import learn_databases, list_archives, newest_archives

MiB = 1024 * 1024


class Counting(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in super().read(key, start, end):
            self.bytes_read += len(chunk)
            yield chunk


def legacy(database: str, mib: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for i in range(4):
            data = os.urandom(mib * MiB // 4)
            info = tarfile.TarInfo(f"dump/{database}/c{i}.bson")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def main(mib: int) -> None:
    storage = Counting()
    await storage.put("2025-01-01-00-00-00-mongodb-dump.tar.gz", legacy("a", mib))
    await storage.put("2025-01-02-00-00-00-mongodb-dump.tar.gz", legacy("b", mib))
    total = sum([o.size async for o in storage.list()]) / MiB

    storage.bytes_read, started = 0, time.monotonic()
    learned = await learn_databases(storage, await list_archives(storage))
    found = [sorted(a.databases or ()) for a in learned]
    print(
        f"list + learn_databases: {found}; read {storage.bytes_read / MiB:.1f} MiB"
        f" of {total:.1f} MiB stored, {time.monotonic() - started:.2f}s"
    )
    storage.bytes_read = 0
    first = await anext(newest_archives(storage, database="b"))
    print(f"first archive of 'b' ({first.key}): read {storage.bytes_read / MiB:.1f} MiB")
    for database in ("b", "a"):
        storage.bytes_read, started = 0, time.monotonic()
        keys = [i.key async for i in newest_archives(storage, database=database)]
        print(
            f"newest_archives(database={database!r}) to the end: {keys};"
            f" read {storage.bytes_read / MiB:.1f} MiB, {time.monotonic() - started:.2f}s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    asyncio.run(main(parser.parse_args().mib))
