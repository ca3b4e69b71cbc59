"""Where a dump's read spends its CPU, per getMore: PyMongo's cursor against the floor.

    .venv/bin/python benchmarks/profile_read.py [--size 200] [--mb 100] [--batch-size 1000]

Serves ``--mb`` MB of ``--size``-byte documents (4 collections) from a
``fakewire`` process, then reads them all twice in this process: through
mongosnap's raw batch cursor (the read a backup does) and through
``raw_drain.py`` (one plain socket, no driver). Each read runs under
cProfile with a CPU clock (``time.process_time``), after one unprofiled
warm-up read so the server has every reply encoded; a read of no collection
(client start, listCollections, close) prices the fixed part. Printed per
read: CPU seconds, CPU microseconds per reply beyond the fixed part, and the
parts a reply costs (cumulative CPU of the functions named, so a part
includes what it calls; "rest" is what the named parts leave). cProfile's own overhead per
call inflates code with many small calls (PyMongo's) more than the floor:
compare the parts, take totals from ``bench_client.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import raw_drain  # noqa: E402
from fakewire import FakeServer  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from mongosnap._rawcursor import raw_batch_cursor  # noqa: E402

# part: (file suffix, function) whose cumulative CPU is the part's
PARTS = {
    "server selection, session, retry wrapper": [
        ("mongo_client.py", "_select_server"),
        ("mongo_client.py", "__aexit__"),
    ],
    "pool checkout + checkin": [("pool.py", "__aenter__"), ("pool.py", "__aexit__")],
    "OP_MSG build": [("message.py", "_op_msg"), ("message.py", "get_message")],
    "send (transport write, socket send)": [("selector_events.py", "write")],
    "receive (socket read + framing)": [
        ("selector_events.py", "_read_ready"),
        ("pool.py", "receive_message"),
        ("streams.py", "readexactly"),
    ],
    "reply walk + array to stream": [
        ("_rawcursor.py", "unpack_cursor_reply"),
        ("raw_drain.py", "cursor_batch"),
    ],
    "event loop (epoll, callbacks)": [("selectors.py", "select")],
}


async def cursor_read(uri: str, size: int, collections: int | None = None) -> int:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    total = 0
    for name in (await client.bench.list_collection_names())[:collections]:
        async for batch in raw_batch_cursor(client.bench[name], batch_size=size):
            total += len(batch)
    await client.close()
    return total


def profiled(read: Callable[[], Awaitable[int]]) -> tuple[float, pstats.Stats]:
    asyncio.run(read())  # type: ignore[arg-type]
    profile = cProfile.Profile(time.process_time)
    started = time.process_time()
    profile.enable()
    asyncio.run(read())  # type: ignore[arg-type]
    profile.disable()
    return time.process_time() - started, pstats.Stats(profile)


def cumulative(stats: pstats.Stats, suffix: str, function: str) -> float:
    found = 0.0
    table: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    table = stats.stats  # type: ignore[attr-defined]
    for (path, _, name), (_, _, _, cum, _) in table.items():
        if path.endswith(suffix) and name == function:
            found += cum
    return found


def show(label: str, cpu: float, stats: pstats.Stats, replies: int, fixed: float) -> None:
    each = (cpu - fixed) / replies
    print(f"\n{label}: {cpu:.3f} CPU-s profiled, {fixed:.3f} of them start/stop (no read)")
    print(f"  per reply, beyond start/stop: {each * 1e6:.0f} µs, of which")
    named = fixed
    for part, functions in PARTS.items():
        spent = sum(cumulative(stats, suffix, function) for suffix, function in functions)
        named += spent
        print(f"  {part:<42} {spent / replies * 1e6:7.1f} µs  {spent / cpu:6.1%}")
    rest = cpu - named
    label = "rest: coroutines, cursor bookkeeping"
    print(f"  {label:<42} {rest / replies * 1e6:7.1f} µs  {rest / cpu:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200, help="document size, bytes")
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    documents = int(args.mb * 1e6 / args.size / 4)
    replies = 4 * -(-documents // args.batch_size)
    print(f"4 x {documents} documents of ~{args.size} B, {replies} replies")
    with FakeServer.spawn(4, documents, args.size) as server:
        size = args.batch_size
        fixed, _ = profiled(lambda: cursor_read(server.uri, size, 0))
        cpu, stats = profiled(lambda: cursor_read(server.uri, size))
        show("mongosnap raw batch cursor (PyMongo)", cpu, stats, replies, fixed)
        fixed, _ = profiled(lambda: raw_drain.count(server.uri, size, 0))
        cpu, stats = profiled(lambda: raw_drain.count(server.uri, size))
        show("raw_drain.py (no driver)", cpu, stats, replies, fixed)


if __name__ == "__main__":
    main()
