"""Ranged reads: one collection read as ``_id`` ranges at once, written as one member.

Against FerretDB (which the default leaves out, so the tests ask for ranges
with ``range_size``): the archive restores byte for byte through mongosnap and
mongorestore and passes verify; mixed ``_id`` types fall back to one cursor;
documents inserted, updated and deleted during a ranged dump never come out
twice and none that existed throughout is lost; the reorder buffer stays
within the read-ahead budget.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import bson
import pytest
from bson import Int64, ObjectId
from helpers import run_cli, server_documents, split_bson, tar_members
from pymongo import MongoClient
from test_mongo_tools import _extract, mongorestore_copy

import mongosnap
from mongosnap import backup, restore, verify
from mongosnap.archive.manifest import Manifest, manifest_key
from mongosnap.pipelines import backup as backup_module
from mongosnap.pipelines.ranges import RangedRead, boundaries, filters
from mongosnap.pipelines.readahead import Budget, Lane
from mongosnap.progress import Progress, Stage
from mongosnap.source import Source

RANGE = 64 * 1024  # bytes per range in these tests: a ~1 MB collection makes ~16 ranges


def document(key: Any, i: int) -> dict[str, Any]:
    return {"_id": key, "i": i, "s": f"doc {i} ✓", "pad": "p" * (300 + i % 200)}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any] | None]]:
    """Every filter a backup's cursors were opened with (None: the whole collection)."""
    seen: list[dict[str, Any] | None] = []
    real = Source.counted_batches

    def spy(
        self: Source, database: str, collection: str, **kw: Any
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        seen.append(kw.get("filter"))
        return real(self, database, collection, **kw)

    monkeypatch.setattr(Source, "counted_batches", spy)
    yield seen


def ids_of(member: bytes) -> list[Any]:
    return [bson.decode(doc)["_id"] for doc in split_bson(member)]


def range_of(key: Any, where: list[dict[str, Any]]) -> int:
    """Which range filter matches an _id (exactly one must)."""
    hits = [
        n
        for n, f in enumerate(where)
        if ("$gte" not in f["_id"] or key >= f["_id"]["$gte"])
        and ("$lt" not in f["_id"] or key < f["_id"]["$lt"])
    ]
    assert len(hits) == 1, (key, hits)
    return hits[0]


async def ranged_backup(uri: str, database: str, store: Path, **kw: Any) -> Any:
    kw = {"batch_size": 50, "parallel": 3, "range_size": RANGE} | kw
    return await backup(uri, str(store), database=database, **kw)


# ------------------------------------------------------ archive and restore


@pytest.mark.parametrize("kind", ["objectid", "int"])
async def test_a_ranged_backup_restores_byte_for_byte(
    kind: str,
    mongo_uri: str,
    new_database: str,
    tmp_path: Path,
    recorded: list[dict[str, Any] | None],
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    """Big is read as ranges, in range order, into one member; small is not;
    verify passes; mongosnap restore and mongorestore give back every document."""
    keys: list[Any] = (
        [ObjectId() for _ in range(2400)] if kind == "objectid" else list(range(-1200, 3600, 2))
    )
    db = _mongo_admin[new_database]
    db.big.insert_many([document(k, i) for i, k in enumerate(keys)])
    db.small.insert_many([document(i, i) for i in range(30)])
    originals = {n: sorted(server_documents(mongo_uri, new_database, n)) for n in ("big", "small")}

    store = tmp_path / "store"
    result = await ranged_backup(mongo_uri, new_database, store)

    where = [f for f in recorded if f is not None]
    assert len(where) >= 8  # the ~1 MB collection went as ranges...
    assert recorded.count(None) == 2  # ...after its first batch; small in one cursor
    archive = (store / result.archive_key).read_bytes()
    members = tar_members(archive)
    for name, docs in originals.items():
        assert sorted(split_bson(members[f"dump/{new_database}/{name}.bson"])) == docs
    order = [range_of(k, where) for k in ids_of(members[f"dump/{new_database}/big.bson"])]
    assert order == sorted(order)  # each range's documents in one run, ranges in order
    assert set(order) == set(range(len(where)))
    manifest = Manifest.from_json((store / manifest_key(result.archive_key)).read_bytes())
    big = next(e for e in manifest.collections if e.name == "big")
    assert big.documents == len(keys) and big.bson is not None
    assert big.bson.size == big.bson_bytes == sum(len(d) for d in originals["big"])
    assert (await verify(str(store), result.archive_key)).ok

    copy = f"{new_database}_copy"
    try:
        await restore(mongo_uri, str(store), database=new_database, to_database=copy)
        for name, docs in originals.items():
            assert sorted(server_documents(mongo_uri, copy, name)) == docs
    finally:
        _mongo_admin.drop_database(copy)
    _extract(store / result.archive_key, tmp_path)
    try:
        mongorestore_copy(mongo_uri, tmp_path / "dump", new_database, copy)
        for name, docs in originals.items():
            assert sorted(server_documents(mongo_uri, copy, name)) == docs
    finally:
        _mongo_admin.drop_database(copy)


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param([*range(1000), *(f"s{i}" for i in range(1000))], id="ints-and-strings"),
        pytest.param([*(ObjectId() for _ in range(1000)), *range(1000)], id="ints-and-objectids"),
        pytest.param([f"key{i:05}" for i in range(2000)], id="strings"),
    ],
)
async def test_mixed_or_uncut_id_types_read_with_one_cursor(
    keys: list[Any],
    mongo_uri: str,
    new_database: str,
    tmp_path: Path,
    recorded: list[dict[str, Any] | None],
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    _mongo_admin[new_database].mixed.insert_many([document(k, i) for i, k in enumerate(keys)])
    originals = server_documents(mongo_uri, new_database, "mixed")
    result = await ranged_backup(mongo_uri, new_database, tmp_path)
    assert recorded == [None]
    member = tar_members((tmp_path / result.archive_key).read_bytes())
    assert split_bson(member[f"dump/{new_database}/mixed.bson"]) == originals  # natural order


async def test_ranged_reads_stay_within_the_read_ahead_budget(
    mongo_uri: str,
    new_database: str,
    tmp_path: Path,
    recorded: list[dict[str, Any] | None],
    monkeypatch: pytest.MonkeyPatch,
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    """Ranges ahead of a ~1 MB collection in a 96 KiB budget: they wait, never pass it."""
    monkeypatch.setattr(backup_module, "Budget", RecordingBudget)
    RecordingBudget.made.clear()
    _mongo_admin[new_database].big.insert_many([document(i, i) for i in range(2400)])
    originals = sorted(server_documents(mongo_uri, new_database, "big"))
    result = await ranged_backup(mongo_uri, new_database, tmp_path, read_ahead=96 * 1024)
    assert len([f for f in recorded if f is not None]) >= 8
    member = tar_members((tmp_path / result.archive_key).read_bytes())
    assert sorted(split_bson(member[f"dump/{new_database}/big.bson"])) == originals
    budget = RecordingBudget.made[0]
    assert 0 < budget.peak <= budget.limit
    assert budget.used == 0 and budget.reading == 0


class RecordingBudget(Budget):
    made: ClassVar[list[RecordingBudget]] = []

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        RecordingBudget.made.append(self)


# ------------------------------------------- writes during a ranged dump


async def test_writes_during_a_ranged_dump_never_duplicate_or_lose_a_document(
    mongo_uri: str,
    new_database: str,
    tmp_path: Path,
    recorded: list[dict[str, Any] | None],
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    """After each batch written, the collection changes: inserts below the
    smallest _id, above the largest and between, updates that grow documents
    and deletes. Every document there throughout is in the member exactly once
    (its first or its updated version); no _id is there twice."""
    coll = _mongo_admin[new_database].live
    coll.insert_many([document(i, i) for i in range(0, 3000, 2)])  # even keys, ~700 KB
    steps = iter(range(10_000))

    def mutate(event: Progress) -> None:
        if event.stage is not Stage.BATCH or event.collection != "live":
            return
        n = next(steps)
        coll.insert_many([document(k, k) for k in (-1 - n, 10_000 + n, 2 * (n % 1500) + 1)])
        coll.update_one({"_id": (4 * n) % 3000}, {"$set": {"pad": "u" * 2000, "v": n}})
        coll.delete_one({"_id": 2998 - (4 * n) % 3000})

    result = await ranged_backup(mongo_uri, new_database, tmp_path, batch_size=20, progress=mutate)

    steps_taken = next(steps)
    assert steps_taken > 50  # the collection changed all along the dump
    assert len([f for f in recorded if f is not None]) >= 8
    deleted = {2998 - (4 * n) % 3000 for n in range(steps_taken)}
    throughout = set(range(0, 3000, 2)) - deleted
    member = tar_members((tmp_path / result.archive_key).read_bytes())
    found = ids_of(member[f"dump/{new_database}/live.bson"])
    assert len(found) == len(set(found))  # never twice
    assert throughout <= set(found)  # every document there throughout
    assert result.collections[0].documents == len(found)


async def test_a_collection_dropped_during_its_ranged_dump_is_vanished(
    mongo_uri: str,
    new_database: str,
    tmp_path: Path,
    recorded: list[dict[str, Any] | None],
    monkeypatch: pytest.MonkeyPatch,
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    """Dropped while its first range is written and the ranges ahead wait for a
    small budget: recorded as vanished, every range reader stopped, their
    buffered batches released, the next collection still dumped."""
    monkeypatch.setattr(backup_module, "Budget", RecordingBudget)
    RecordingBudget.made.clear()
    db = _mongo_admin[new_database]
    db.big.insert_many([document(i, i) for i in range(2400)])
    db.later.insert_many([document(i, i) for i in range(10)])
    dropped: list[Progress] = []

    def drop(event: Progress) -> None:
        if event.stage is Stage.BATCH and event.collection == "big" and not dropped:
            dropped.append(event)
            db.drop_collection("big")

    result = await ranged_backup(
        mongo_uri, new_database, tmp_path, read_ahead=32 * 1024, progress=drop
    )  # (a range reader left waiting for the budget would hang it: pytest-timeout)
    assert dropped and len([f for f in recorded if f is not None]) >= 2
    assert [(c.name, c.status) for c in result.collections] == [
        ("big", "vanished"),
        ("later", "complete"),
    ]
    budget = RecordingBudget.made[0]
    assert budget.used == 0 and budget.reading == 0
    assert [t for t in asyncio.all_tasks() if "/mongosnap/" in str(t.get_coro())] == []


# ------------------------------------------------------- the CLI and defaults


def test_ranges_are_off_by_default(mongo_uri: str, new_database: str, tmp_path: Path) -> None:
    """Measured only on FerretDB, where they are slower: no ranges unless asked for."""
    with MongoClient(mongo_uri) as client:
        client[new_database].big.insert_many([document(i, i) for i in range(6000)])
    answer = run_cli("backup", str(tmp_path), "--uri", mongo_uri, new_database, "-v")
    assert answer.returncode == 0, answer.stderr
    assert "_id ranges" not in answer.stderr
    archive = next(tmp_path.glob("*.tar.gz"))
    member = split_bson(tar_members(archive.read_bytes())[f"dump/{new_database}/big.bson"])
    assert member == server_documents(mongo_uri, new_database, "big")  # natural order


def test_cli_range_size(mongo_uri: str, new_database: str, tmp_path: Path) -> None:
    """``--range-size MIB`` reads a ~2.7 MB collection as ranges; bad values exit 2."""
    with MongoClient(mongo_uri) as client:
        client[new_database].big.insert_many([document(i, i) for i in range(6000)])
    originals = sorted(server_documents(mongo_uri, new_database, "big"))
    answer = run_cli(
        "backup", str(tmp_path), "--uri", mongo_uri, new_database, "--range-size", "1", "-v"
    )
    assert answer.returncode == 0, answer.stderr
    assert "_id ranges" in answer.stderr
    archive = next(tmp_path.glob("*.tar.gz"))
    assert (
        sorted(split_bson(tar_members(archive.read_bytes())[f"dump/{new_database}/big.bson"]))
        == originals
    )
    for bad in ("-1", "x"):
        answer = run_cli("backup", str(tmp_path), "--uri", mongo_uri, "x", "--range-size", bad)
        assert answer.returncode == mongosnap.UsageError.exit_code
        assert "Traceback" not in answer.stderr


# ------------------------------------------------------- without a server


@pytest.mark.parametrize(
    ("low", "high", "pieces", "cuts"),
    [
        (0, 100, 4, [25, 50, 75]),
        (-7, 5, 3, [-3, 1]),
        (Int64(2**62), Int64(2**62 + 2), 4, [2**62 + 1]),
        (0, 1, 8, []),  # no whole number strictly between: one cursor
        (5, 5, 4, []),
        (0.0, 1.0, 4, [0.25, 0.5, 0.75]),
        (0, 1.0, 2, [0.5]),
        (float("nan"), 1.0, 2, []),
        (float("-inf"), 1.0, 2, []),
        (False, True, 2, []),
        ("a", "z", 2, []),
        (0, "z", 2, []),
        (0, 100, 1, []),
    ],
)
def test_boundaries(low: Any, high: Any, pieces: int, cuts: list[Any]) -> None:
    assert boundaries(low, high, pieces) == cuts


def test_objectid_boundaries_split_their_twelve_bytes() -> None:
    low, high = ObjectId("00" * 12), ObjectId("00" * 11 + "09")
    assert boundaries(low, high, 3) == [ObjectId("00" * 11 + "03"), ObjectId("00" * 11 + "06")]
    same_second = ObjectId.from_datetime(ObjectId().generation_time)
    later = ObjectId(same_second.binary[:4] + b"\xff" * 8)
    cuts = boundaries(same_second, later, 4)
    assert len(cuts) == 3 and same_second < cuts[0] < cuts[1] < cuts[2] <= later
    assert boundaries(low, 5, 2) == []


def test_filters_cover_the_bracket_open_at_both_ends() -> None:
    where = filters([10, 20])
    assert where == [
        {"_id": {"$lt": 10}},
        {"_id": {"$gte": 10, "$lt": 20}},
        {"_id": {"$gte": 20}},
    ]
    assert [range_of(k, where) for k in (-(10**12), 9, 10, 19, 20, 10**12)] == [0, 0, 1, 1, 2, 2]


async def test_the_reorder_buffer_never_grows_past_its_budget() -> None:
    """Eight ranges of 30 items of 100 bytes, a 1,000-byte budget, window 3 and
    one reader permit, a consumer slower than the producers: items come out in
    range order, ranges ahead block at the budget, at most the window runs."""
    budget = Budget(1000)
    budget.readers = 1
    ranged = RangedRead([{"_id": {"$lt": n}} for n in range(8)], budget, depth=2, window=3)
    running: list[int] = []
    most = 0

    async def read(where: dict[str, Any], lane: Lane[tuple[bytes, int]]) -> None:
        nonlocal most
        n = where["_id"]["$lt"]
        async with lane.reading():
            running.append(n)
            most = max(most, len(running))
            for i in range(30):
                async with lane.fetching():
                    await lane.put((bytes([n, i]), 1), 100)
            running.remove(n)
        await lane.close()

    reading = asyncio.create_task(ranged.run(read))
    out = []
    async with contextlib.aclosing(ranged.batches()) as batches:
        async for item, _ in batches:
            out.append(tuple(item))
            for _ in range(5):
                await asyncio.sleep(0)  # a slow consumer: the producers race ahead
    await reading
    assert out == [(n, i) for n in range(8) for i in range(30)]
    assert budget.peak == budget.limit  # the readers ahead filled it, never more
    assert budget.used == 0 and budget.reading == 0
    assert most == 2  # the head plus one reader permit, within the window of 3
