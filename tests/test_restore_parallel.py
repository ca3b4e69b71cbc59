"""Restore loads two collections of an archive at once, within one budget of inserts."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import seed, server_documents
from pymongo import AsyncMongoClient, MongoClient, monitoring

from mongosnap import Progress, Stage, backup, heal, restore
from mongosnap.pipelines import engine
from mongosnap.pipelines.engine import _bounded
from mongosnap.pipelines.lease import LEASES

SIZES = {"apps": 3100, "logs": 3100, "users": 2100, "empty": 0}
"""Each but empty spans several insert batches (staging.BATCH_DOCUMENTS is 1000)."""


class InsertsInFlight(monitoring.CommandListener):
    """Counts the insert commands the driver has sent and not yet seen answered."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.collections: set[str] = set()
        self.leases: set[int] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert" and event.command["insert"] == LEASES:
            self.leases.add(event.request_id)  # not a batch of documents
        elif event.command_name == "insert":
            self.now += 1
            self.most = max(self.most, self.now)
            self.collections.add(str(event.command["insert"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._ended(event.command_name, event.request_id)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._ended(event.command_name, event.request_id)

    def _ended(self, name: str, request_id: int) -> None:
        if request_id in self.leases:
            self.leases.discard(request_id)
        elif name == "insert":
            self.now -= 1


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    return new_database


@pytest.fixture
def other_database(mongo_uri: str, seeded: str) -> Any:
    name = f"{seeded}_copy"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


async def test_two_collections_load_together_within_the_workers_budget(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    inserts = InsertsInFlight()
    events: list[Progress] = []
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, event_listeners=[inserts])
    try:
        result = await restore(
            client,
            tmp_path,
            database=seeded,
            to_database=other_database,
            workers=3,
            progress=events.append,
        )
    finally:
        await client.close()
    # the manifest's order, whatever order the loads ended in
    assert [c.name for c in result.collections] == ["apps", "empty", "logs", "users"]
    assert {c.status.value for c in result.collections} == {"restored"}
    for name, count in SIZES.items():
        restored = server_documents(mongo_uri, other_database, name)
        assert len(restored) == count
        assert sorted(restored) == sorted(server_documents(mongo_uri, seeded, name))
    # the second collection started before the first was done ...
    order = [(e.stage, e.collection) for e in events if e.stage is not Stage.BATCH]
    assert order.index((Stage.STARTED, "empty")) < order.index((Stage.DONE, "apps"))
    # ... and all of them together never had more inserts in flight than --workers
    assert 1 < inserts.most <= 3
    assert len(inserts.collections) == 3  # staging names: one per non-empty collection


async def test_at_most_parallel_collections_are_loaded_at_once(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    events: list[Progress] = []
    await restore(
        mongo_uri, tmp_path, database=seeded, to_database=other_database, progress=events.append
    )
    loading: set[str] = set()
    most = 0
    for event in events:
        if event.stage is Stage.STARTED:
            loading.add(event.collection)
        elif event.stage is not Stage.BATCH:
            loading.discard(event.collection)
        most = max(most, len(loading))
    assert most == engine.PARALLEL_COLLECTIONS


async def test_heal_loads_one_collection_at_a_time(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    """So that a connection reset fails only the collection it hit (test_heal_signals)."""
    await backup(mongo_uri, tmp_path, database=seeded)
    with MongoClient(mongo_uri) as client:
        for name in ("apps", "logs"):
            client[seeded].drop_collection(name)
    events: list[Progress] = []
    report = await heal(
        mongo_uri, tmp_path, database=seeded, collections=["apps", "logs"], progress=events.append
    )
    assert sorted(o.name for o in report.restored) == ["apps", "logs"]
    order = [(e.stage, e.collection) for e in events if e.stage is not Stage.BATCH]
    assert order == [
        (Stage.STARTED, "apps"),
        (Stage.DONE, "apps"),
        (Stage.STARTED, "logs"),
        (Stage.DONE, "logs"),
    ]


async def test_bounded_keeps_the_order_and_the_limit() -> None:
    running = 0
    most = 0

    async def work(i: int, delay: float) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(delay)
        running -= 1
        return i

    delays = [0.03, 0.0, 0.02, 0.0, 0.01]
    assert await _bounded([work(i, d) for i, d in enumerate(delays)], 2) == [0, 1, 2, 3, 4]
    assert most == 2
    assert await _bounded([], 2) == []


async def test_bounded_raises_the_first_failure_as_it_is_and_cancels_the_rest() -> None:
    cleaned: list[int] = []

    async def slow(i: int) -> int:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(i)
        return i

    async def broken() -> int:
        await asyncio.sleep(0)
        raise ConnectionError("server gone")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine never awaited would warn
        with pytest.raises(ConnectionError, match="server gone"):
            await _bounded([slow(0), broken(), slow(2), slow(3)], 2)
    # those running were cancelled and cleaned up; the last never got its turn
    assert 0 in cleaned and 3 not in cleaned
