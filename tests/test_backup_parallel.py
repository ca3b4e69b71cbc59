"""Parallel reads: the same archive whatever ``parallel``, read-ahead in bounded
memory, and a failing reader stops the whole backup and leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import (
    Destination,
    run_cli,
    s3_config,
    seed,
    server_documents,
    split_bson,
    tar_members,
)
from pymongo import MongoClient

import mongosnap
from mongosnap import backup
from mongosnap._errors import SourceError
from mongosnap.archive.manifest import Manifest, manifest_key
from mongosnap.pipelines import backup as backup_module
from mongosnap.pipelines.readahead import Budget, Lane
from mongosnap.progress import Progress, Stage
from mongosnap.source import Source

SIZES = {"a": 300, "b": 1200, "c": 0, "d": 40, "e": 700}


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    return new_database


def stored(dest: Destination, key: str) -> bytes:
    return dest.get(f"nightly/{key}" if dest.bucket else key)


def members_in_order(manifest: Manifest) -> list[tuple[str, int, int, int]]:
    ranges = []
    for entry in manifest.collections:
        for member in (entry.metadata, entry.bson):
            if member is not None:
                ranges.append((member.name, member.offset, member.end, member.size))
    return ranges


class RecordingBudget(Budget):
    """A real Budget that remembers every instance, to read its peak afterwards."""

    made: ClassVar[list[RecordingBudget]] = []

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        RecordingBudget.made.append(self)


def ours(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and "/mongosnap/" in code.co_filename


# ----------------------------------------------------------- the archive


async def test_parallel_archive_is_the_sequential_one(
    destination: Destination, mongo_uri: str, seeded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same members, same order, same ranges; every byte the server's documents.

    A read-ahead budget smaller than the largest collection: readers ahead must
    wait, and the head collection must still get through.
    """
    monkeypatch.setattr(backup_module, "Budget", RecordingBudget)
    RecordingBudget.made.clear()
    results = []
    for parallel, read_ahead in ((1, 0), (4, 64 * 1024), (8, 1 << 30)):
        results.append(
            await backup(
                mongo_uri,
                destination.url,
                database=seeded,
                s3=destination.s3,
                batch_size=50,
                parallel=parallel,
                read_ahead=read_ahead,
            )
        )
    manifests = [
        Manifest.from_json(stored(destination, manifest_key(r.archive_key))) for r in results
    ]
    first = members_in_order(manifests[0])
    assert [m[0] for m in first] == [
        name
        for coll in sorted(SIZES)
        for name in (f"dump/{seeded}/{coll}.metadata.json", f"dump/{seeded}/{coll}.bson")
    ]
    for manifest in manifests[1:]:
        assert members_in_order(manifest) == first
    for result in results:
        members = tar_members(stored(destination, result.archive_key))
        assert [m for m in members if m.startswith("dump/")] == [m[0] for m in first]
        for coll, count in SIZES.items():
            data = members[f"dump/{seeded}/{coll}.bson"]
            assert split_bson(data) == server_documents(mongo_uri, seeded, coll)
            assert len(split_bson(data)) == count
    budget = RecordingBudget.made[1]
    collection_b = len(b"".join(server_documents(mongo_uri, seeded, "b")))
    assert collection_b > budget.limit  # larger than the budget, yet dumped whole
    assert 0 < budget.peak <= budget.limit
    assert all(b.used == 0 for b in RecordingBudget.made)
    assert RecordingBudget.made[0].peak == 0  # parallel=1: nothing read ahead


async def test_read_ahead_of_a_collection_dropped_before_its_turn_is_discarded(
    tmp_path: Path, mongo_uri: str, seeded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``b`` is read ahead while ``a`` is written, then dropped: vanished, no data.

    Groups of one collection, as after a large collection: the check after
    ``a`` answers for ``b``'s turn (docs/format.md section 3)."""
    monkeypatch.setattr(backup_module, "GROUP_COLLECTIONS", 1)
    monkeypatch.setattr(backup_module, "Budget", RecordingBudget)
    RecordingBudget.made.clear()
    fired: list[Progress] = []

    def drop_b(event: Progress) -> None:
        if event.stage is Stage.DONE and event.collection == "a" and not fired:
            fired.append(event)
            with MongoClient(mongo_uri) as client:
                client[seeded].drop_collection("b")

    result = await backup(
        mongo_uri, str(tmp_path), database=seeded, batch_size=50, parallel=8, progress=drop_b
    )
    assert fired
    manifest = Manifest.from_json((tmp_path / manifest_key(result.archive_key)).read_bytes())
    victim = next(e for e in manifest.collections if e.name == "b")
    assert (victim.status, victim.bson, victim.documents) == ("vanished", None, 0)
    assert [c.status for c in result.collections] == [
        "complete",
        "vanished",
        "complete",
        "complete",
        "complete",
    ]
    assert RecordingBudget.made[0].used == 0


# -------------------------------------------------- failure and the CLI


async def test_a_read_ahead_failure_stops_the_collection_being_written(
    s3_endpoint: Any,
    new_bucket: Any,
    mongo_uri: str,
    seeded: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``d`` fails to read while ``b`` is being written: the backup fails with d's
    error at once, every reader stops, the upload is aborted."""
    bucket = new_bucket(s3_endpoint)
    dest = Destination(
        f"s3://{bucket}", s3_config(s3_endpoint, part_size=5 << 20), s3_endpoint, bucket
    )
    real = Source.counted_batches
    b_written = asyncio.Event()

    async def failing(
        self: Source, database: str, collection: str, *, batch_size: int = 1000
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        yielded = 0
        async for item in real(self, database, collection, batch_size=batch_size):
            if collection == "b" and yielded == 3:
                await asyncio.Event().wait()  # b stays the collection being written
            if collection == "d":
                await b_written.wait()
                raise SourceError("injected read failure of d")
            yield item
            yielded += 1

    def watch(event: Progress) -> None:
        seen.append(event)
        if event.stage is Stage.BATCH and event.collection == "b":
            b_written.set()

    monkeypatch.setattr(Source, "counted_batches", failing)
    seen: list[Progress] = []
    with pytest.raises(SourceError, match="injected read failure of d"):
        await backup(
            mongo_uri,
            dest.url,
            database=seeded,
            s3=dest.s3,
            batch_size=10,
            parallel=4,
            progress=watch,
        )
    assert [e.collection for e in seen if e.stage is Stage.DONE] == ["a"]
    assert [t for t in asyncio.all_tasks() if ours(t)] == []
    assert dest.keys() == []
    assert dest.pending_uploads() == []


def test_cli_parallel_must_be_positive(mongo_uri: str, tmp_path: Path) -> None:
    answer = run_cli("backup", str(tmp_path), "--uri", mongo_uri, "x", "--parallel", "0")
    assert answer.returncode == mongosnap.UsageError.exit_code
    assert "parallel" in answer.stderr
    assert "Traceback" not in answer.stderr


# ------------------------------------------------ lanes, without a server


async def test_lanes_ahead_never_buffer_more_than_the_budget() -> None:
    """Three producers of 40 items of 100 bytes, a 1,000-byte budget: items come
    out in order, the head drains past the budget, the peak stays within it."""
    budget = Budget(1000)
    lanes = [Lane[int](budget, depth=2) for _ in range(3)]

    async def produce(lane: Lane[int], base: int) -> None:
        for i in range(40):
            await lane.put(base + i, 100)
        await lane.close()

    tasks = [asyncio.create_task(produce(lane, 1000 * n)) for n, lane in enumerate(lanes)]
    out: list[int] = []
    for lane in lanes:
        await lane.promote()
        while (item := await lane.get()) is not None:
            out.append(item)
            await asyncio.sleep(0)  # let the producers race ahead
    await asyncio.gather(*tasks)
    assert out == [1000 * n + i for n in range(3) for i in range(40)]
    assert budget.peak == 1000
    assert budget.used == 0


async def test_an_item_larger_than_the_budget_waits_for_its_turn() -> None:
    budget = Budget(10)
    head, ahead = Lane[str](budget, depth=1), Lane[str](budget, depth=1)
    await head.promote()
    put = asyncio.create_task(ahead.put("big", 50))
    await asyncio.sleep(0.01)
    assert not put.done() and budget.used == 0
    await head.close()
    assert await head.get() is None
    await ahead.promote()
    await put
    assert await ahead.get() == "big"
    assert budget.peak == 0


async def test_a_lane_closed_with_an_error_raises_it_after_its_items() -> None:
    budget = Budget(100)
    lane = Lane[int](budget, depth=1)
    await lane.put(1, 10)
    await lane.close(SourceError("gone"))
    assert await lane.get() == 1
    with pytest.raises(SourceError, match="gone"):
        await lane.get()
    other = Lane[int](budget, depth=1)
    await other.put(2, 30)
    await other.discard()
    assert budget.used == 0 and await other.get() is None


async def test_producers_ahead_fetch_within_their_slots_and_a_promoted_lane_needs_none() -> None:
    """One fetcher slot, taken by a lane ahead that waits for the budget: the next
    lane, waiting for the slot, still runs once it becomes the head."""
    budget = Budget(100, fetchers=1)
    lanes = [Lane[int](budget, depth=1) for _ in range(4)]
    inside: list[int] = []
    peak_inside = 0

    async def produce(n: int) -> None:
        nonlocal peak_inside
        for i in range(5):
            async with lanes[n].fetching():
                inside.append(n)
                if not lanes[n]._head:
                    peak_inside = max(peak_inside, sum(1 for m in inside if not lanes[m]._head))
                await asyncio.sleep(0)
                await lanes[n].put(10 * n + i, 60)  # two items never fit the budget
                inside.remove(n)
        await lanes[n].close()

    tasks = [asyncio.create_task(produce(n)) for n in (3, 2, 1, 0)]  # far lanes first
    await asyncio.sleep(0.01)
    out = []
    for lane in lanes:
        await lane.promote()
        while (item := await asyncio.wait_for(lane.get(), 5)) is not None:
            out.append(item)
    await asyncio.gather(*tasks)
    assert out == [10 * n + i for n in range(4) for i in range(5)]
    assert peak_inside == 1
    assert budget.peak <= budget.limit and budget.used == 0 and budget.fetching == 0
