"""Leases taken, renewed and given back by groups, against real FerretDB: what
another run holds stays its own, and a lease lost during a stall is never
confirmed for publishing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import CommandLog
from pymongo import AsyncMongoClient, MongoClient

from mongosnap._errors import CollectionBusy
from mongosnap.pipelines.lease import LEASES, Leases
from mongosnap.source import Source

SHORT = 1.5
"""Seconds of a lease in the stall test: the stall outlasts it."""


@pytest.fixture
async def logged(mongo_uri: str) -> AsyncIterator[tuple[Source, CommandLog]]:
    """A Source whose commands are logged."""
    commands = CommandLog()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, event_listeners=[commands])
    try:
        yield Source(client, "test", owned=False), commands
    finally:
        await client.close()


def _leases(uri: str, database: str) -> dict[str, str]:
    """Each lease on the server: its collection name and owner."""
    with MongoClient(uri) as client:
        return {d["_id"]: d["owner"] for d in client[database][LEASES].find()}


async def test_a_plan_takes_its_leases_with_one_insert_and_gives_them_back_with_one_delete(
    mongo_uri: str, new_database: str, logged: tuple[Source, CommandLog]
) -> None:
    """Three planned names, one held by another run: one unordered insert
    takes the two free ones (the busy one is tried once for an expired
    takeover and stays the other run's), no renewal before publishing, one
    delete gives both back."""
    source, commands = logged
    other = Leases(source, new_database)
    assert await other.acquire("b")
    ours = Leases(source, new_database)
    ours.plan(["a", "b", "c"])
    commands.commands.clear()

    assert [await ours.acquire(n) for n in ("a", "b", "c")] == [True, False, True]
    inserts = [c for name, c in commands.commands if name == "insert"]
    assert [[d["_id"] for d in c["documents"]] for c in inserts] == [["a", "b", "c"]]
    assert inserts[0]["ordered"] is False
    await ours.confirm("a")
    await ours.confirm("c")
    assert commands.sent() == {"hello": 1, "insert": 1, "update": 1}  # update: b, refused
    assert _leases(mongo_uri, new_database) == {"a": ours.owner, "b": other.owner, "c": ours.owner}

    await ours.release("a")
    await ours.release("c")
    await ours.close()
    assert commands.sent() == {"hello": 1, "insert": 1, "update": 1, "delete": 1, "find": 1}
    assert _leases(mongo_uri, new_database) == {"b": other.owner}
    await other.close()
    with MongoClient(mongo_uri) as client:
        assert LEASES not in client[new_database].list_collection_names()


async def test_a_lease_taken_over_while_the_run_stalled_is_not_confirmed(
    mongo_uri: str, new_database: str, logged: tuple[Source, CommandLog]
) -> None:
    """A run stalled past its lease's expiry (its event loop blocked: no
    heartbeat) while another run took the collection over: its confirmation
    before publishing renews the lease, finds it taken and refuses."""
    source, commands = logged
    stalled = Leases(source, new_database, seconds=SHORT)
    stalled.plan(["x"])
    assert await stalled.acquire("x")
    taken_at = time.monotonic()
    await stalled.confirm("x")  # just taken: nothing sent
    assert "update" not in commands.sent()

    took_over: list[bool] = []

    async def other_run() -> None:
        client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
        try:
            other = Leases(Source(client, "test", owned=False), new_database, seconds=SHORT)
            await asyncio.sleep(max(0.0, taken_at + SHORT + 0.3 - time.monotonic()))
            took_over.append(await other.acquire("x"))
            other.held.clear()  # keeps its lease: closing would give it back
            await other.close()
        finally:
            await client.close()

    thread = threading.Thread(target=lambda: asyncio.run(other_run()))
    thread.start()
    thread.join()  # blocks this run's event loop: the stall
    assert took_over == [True]

    with pytest.raises(CollectionBusy, match="another run took the collection over"):
        await stalled.confirm("x")
    assert commands.sent()["update"] >= 1
    await stalled.close()
    left = _leases(mongo_uri, new_database)
    assert list(left) == ["x"] and left["x"] != stalled.owner  # the other run's, left to it


async def test_one_renewal_for_all_leases_reads_back_which_are_still_ours(
    mongo_uri: str, new_database: str, logged: tuple[Source, CommandLog]
) -> None:
    """The heartbeat renews every held lease with one update; when it matches
    fewer than it holds (a lease lost: here another run holds ``q`` now), it
    reads back which are its own, keeps renewing those and lets ``q`` go."""
    source, commands = logged
    ours = Leases(source, new_database, seconds=0.6)
    ours.plan(["p", "q"])
    assert await ours.acquire("p") and await ours.acquire("q")
    with MongoClient(mongo_uri) as client:
        leases = client[new_database][LEASES]
        taken = leases.find_one({"_id": "p"})["expires"]
        leases.update_one({"_id": "q"}, {"$set": {"owner": "another run"}})
    for _ in range(200):
        if "q" not in ours.held:
            break
        await asyncio.sleep(0.05)
    assert ours.held == {"p"}
    with MongoClient(mongo_uri) as client:
        assert client[new_database][LEASES].find_one({"_id": "p"})["expires"] > taken
    updates = [c["updates"][0]["q"] for name, c in commands.commands if name == "update"]
    assert {"_id": {"$in": ["p", "q"]}, "owner": ours.owner} in updates
    finds = [c["filter"] for name, c in commands.commands if name == "find"]
    assert {"_id": {"$in": ["p", "q"]}, "owner": ours.owner} in finds
    await ours.close()
    assert _leases(mongo_uri, new_database) == {"q": "another run"}
