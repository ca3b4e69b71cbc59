"""Source.indexes: one listIndexes command, the same specs PyMongo's list_indexes
gives, against real FerretDB, through PyMongo's and Motor's clients."""

from __future__ import annotations

from typing import Any

import pytest
from bson.int64 import Int64
from bson.son import SON
from helpers import CommandLog
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from mongosnap.source import Source


def expected(uri: str, database: str, name: str) -> list[dict[str, Any]]:
    with MongoClient(uri) as client:
        return [dict(ix) for ix in client[database][name].list_indexes()]


@pytest.mark.parametrize("driver", ["pymongo", "motor"])
async def test_indexes_are_list_indexes_in_one_command(
    mongo_uri: str, new_database: str, driver: str
) -> None:
    with MongoClient(mongo_uri) as client:
        coll = client[new_database].people
        coll.insert_one({"a": 1, "b": 2})
        coll.create_index([("b", DESCENDING), ("a", ASCENDING)], name="b_a", unique=True)
    listener = CommandLog()
    kind = AsyncMongoClient if driver == "pymongo" else AsyncIOMotorClient
    client: Any = kind(mongo_uri, event_listeners=[listener])
    try:
        source = Source(client, "test", owned=False)
        found = await source.indexes(new_database, "people")
        missing = await source.indexes(new_database, "nowhere")
    finally:
        closed = client.close()
        if closed is not None:
            await closed
    assert found == expected(mongo_uri, new_database, "people")
    assert [ix["name"] for ix in found] == ["_id_", "b_a"]
    assert isinstance(found[1]["key"], SON)  # key order kept, as list_indexes gives it
    assert list(found[1]["key"].items()) == [("b", -1), ("a", 1)]
    assert missing == []  # as list_indexes: a collection that does not exist has none
    assert listener.names() == ["listIndexes"] * 2


async def test_indexes_left_for_a_getmore_are_read_through_the_cursor(
    mongo_uri: str, new_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose listIndexes leaves specs for a getMore (neither MongoDB nor
    FerretDB does for 64 indexes at most): the reply is cut to one spec with an
    open cursor on top of the real server's; the command's cursor is killed and
    every spec read through list_indexes."""
    with MongoClient(mongo_uri) as client:
        coll = client[new_database].people
        coll.insert_one({"a": 1, "b": 2})
        coll.create_index("a", name="a_1")
        coll.create_index("b", name="b_1")
    real = AsyncDatabase.command

    async def partial(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        reply = await real(self, command, *args, **kwargs)
        if isinstance(command, dict) and "listIndexes" in command:
            cursor = reply["cursor"]
            reply["cursor"] = {
                "id": Int64(4242),
                "ns": cursor["ns"],
                "firstBatch": cursor["firstBatch"][:1],
            }
        return reply

    monkeypatch.setattr(AsyncDatabase, "command", partial)
    listener = CommandLog()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, event_listeners=[listener])
    try:
        found = await Source(client, "test", owned=False).indexes(new_database, "people")
    finally:
        await client.close()
    assert found == expected(mongo_uri, new_database, "people")
    assert [ix["name"] for ix in found] == ["_id_", "a_1", "b_1"]
    assert listener.names() == ["listIndexes", "killCursors", "listIndexes"]
