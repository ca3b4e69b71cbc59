"""The archive writer's cost per collection, alone: no server, no PyMongo.

    .venv/bin/python benchmarks/bench_writer.py [--collections 2000] [--rounds 5]
        [--codec gzip] [--only directory memory compression] [--profile FILE]

Per collection it does what the backup does (mongosnap/pipelines/backup.py):
the metadata member with add_file(hold=True), the data member with
begin/write/end(hold=True) (one batch of 50 documents of ~500 B, the ``many``
case of bench_client.py), and settles both headers by groups of 64. Into two
sinks: a local directory (LocalStorage, committed) and memory (MemoryStorage).
Printed: microseconds of CPU per collection (process time, min of the rounds)
for each sink, and for compressing the same pieces alone, the part no
bookkeeping can remove. ``--profile FILE`` writes a cProfile of one more
local-directory round.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fakewire import make_document  # noqa: E402

from mongosnap.archive import names  # noqa: E402
from mongosnap.archive.manifest import MemberRange  # noqa: E402
from mongosnap.archive.writer import ArchiveWriter  # noqa: E402
from mongosnap.codecs import Codec, get_codec  # noqa: E402
from mongosnap.storage import LocalStorage, MemoryStorage  # noqa: E402
from mongosnap.storage.base import ObjectWriter  # noqa: E402

GROUP = 64  # collections settled together (GROUP_COLLECTIONS in the backup)
DOCUMENTS, SIZE = 50, 500
METADATA = (
    b'{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],'
    b'"uuid":"0123456789abcdef0123456789abcdef","collectionName":"c00000","type":"collection"}'
)


def corpus() -> bytes:
    rng = random.Random(1)
    return b"".join(make_document(i, SIZE, rng) for i in range(DOCUMENTS))


async def dump(sink: ObjectWriter, codec: Codec, collections: int, batch: bytes) -> None:
    async with ArchiveWriter(sink, codec, mtime=1_700_000_000) as writer:
        group: list[tuple[MemberRange, MemberRange]] = []
        for c in range(collections):
            coll = f"c{c:05d}"
            meta = await writer.add_file(
                names.member_name("bench", coll, "metadata"), METADATA, hold=True
            )
            await writer.begin(names.member_name("bench", coll, "bson"))
            await writer.write(batch)
            data = await writer.end(hold=True)
            group.append((meta, data))
            if len(group) == GROUP or c == collections - 1:
                for meta, data in group:
                    await writer.settle(meta, meta.name)
                    await writer.settle(data, data.name)
                group.clear()
        await writer.finish(b"{}")
    await sink.commit()


def to_directory(codec: Codec, collections: int, batch: bytes) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sink = LocalStorage(tmp).open_writer("archive.tar.gz")
        return timed(lambda: asyncio.run(dump(sink, codec, collections, batch)))


def to_memory(codec: Codec, collections: int, batch: bytes) -> float:
    sink = MemoryStorage().open_writer("archive.tar.gz")
    return timed(lambda: asyncio.run(dump(sink, codec, collections, batch)))


def compression_only(codec: Codec, collections: int, batch: bytes) -> float:
    def run() -> None:
        for _ in range(collections):
            codec.compress(METADATA + bytes(-len(METADATA) % 512))
            codec.compress(batch + bytes(-len(batch) % 512))

    return timed(run)


def timed(run: Callable[[], object]) -> float:
    started = time.process_time()
    run()
    return time.process_time() - started


BENCHES = {"directory": to_directory, "memory": to_memory, "compression": compression_only}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--codec", default="gzip")
    parser.add_argument("--profile", help="write a cProfile of one directory round here")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=list(BENCHES))
    args = parser.parse_args()
    codec, n, batch = get_codec(args.codec), args.collections, corpus()
    print(f"{n} collections, {len(batch)} B of BSON each, {codec!r}, min of {args.rounds}")
    for label in args.only:
        bench = BENCHES[label]
        best = min(bench(codec, n, batch) for _ in range(args.rounds))
        print(f"{label:<12} {best / n * 1e6:7.1f} µs per collection")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(to_directory, codec, n, batch)
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
