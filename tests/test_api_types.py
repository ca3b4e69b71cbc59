"""The Python API's types: Ts exported, every ts parameter taking a Ts, a bson
Timestamp or an aware datetime, and a synchronous MongoClient refused by mypy
--strict (tests/test_clients.py type-checks a caller) and, at run time, with
a TypeError."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson import Int64, Timestamp
from pymongo import MongoClient

import mongosnap
from mongosnap import Ts, UsageError
from mongosnap.oplog import replay
from mongosnap.source import Source

SECOND = 1_790_000_000


def _insert(ts: Timestamp, ns: str, n: int) -> bytes:
    return bson.encode({"ts": ts, "t": Int64(1), "v": 2, "op": "i", "ns": ns, "o": {"_id": n}})


def _ids(uri: str, database: str) -> list[int]:
    with MongoClient(uri) as client:
        return [d["_id"] for d in client[database]["c"].find().sort("_id", 1)]


@pytest.mark.parametrize(
    ("until", "applied"),
    [
        (Ts(SECOND, 2), [1, 2]),
        (Timestamp(SECOND, 1), [1]),
        (datetime.fromtimestamp(SECOND, UTC), [1, 2, 3]),  # the end of that second
        (datetime.fromtimestamp(SECOND + 1, UTC).astimezone(), [1, 2, 3, 4]),  # any zone
    ],
    ids=["Ts", "Timestamp", "datetime", "local-datetime"],
)
async def test_replay_until_takes_each_form_of_ts(
    mongo_uri: str, new_database: str, until: Any, applied: list[int]
) -> None:
    ns = f"{new_database}.c"
    entries = [
        _insert(Timestamp(SECOND, 1), ns, 1),
        _insert(Timestamp(SECOND, 2), ns, 2),
        _insert(Timestamp(SECOND, 3), ns, 3),
        _insert(Timestamp(SECOND + 1, 1), ns, 4),
        _insert(Timestamp(SECOND + 2, 1), ns, 5),
    ]
    report = await replay(mongo_uri, entries, until=until)
    assert _ids(mongo_uri, new_database) == applied
    assert report.stop == "until"


@pytest.mark.parametrize("until", [datetime(2026, 12, 1, 10), 1_790_000_000, "1790000000:1"])
async def test_a_ts_of_no_usable_form_is_refused_before_any_write(
    mongo_uri: str, new_database: str, until: Any
) -> None:
    ns = f"{new_database}.c"
    kind = UsageError if isinstance(until, datetime) else TypeError
    with pytest.raises(kind, match=r"time zone|mongosnap\.Ts, bson\.Timestamp or aware datetime"):
        await replay(mongo_uri, [_insert(Timestamp(SECOND, 1), ns, 1)], until=until)
    assert _ids(mongo_uri, new_database) == []


@pytest.fixture(scope="module")
def oplog_backup(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A small backup --oplog, in a directory, of a database on an oplog FerretDB
    of its own (a small oplog: the shared one's is slow to read for the window)."""
    name = f"ferretdb-oplog-{uuid.uuid4().hex[:8]}"
    mongo_oplog_uri = str(testbed.start_oplog_ferretdb(name, 1 << 20))
    database = "api_types"
    with MongoClient(mongo_oplog_uri) as client:
        client[database]["c"].insert_many([{"_id": n, "v": "x" * n} for n in range(50)])
        source = [bson.encode(d) for d in client[database]["c"].find().sort("_id", 1)]
    dest = tmp_path_factory.mktemp("api-types")

    async def run() -> Any:
        return await mongosnap.backup(mongo_oplog_uri, dest, database=database, oplog=True)

    report = asyncio.run(run())
    try:
        yield dest, database, Ts.from_json(report.oplog["last_ts"]), source
    finally:
        testbed.stop_server(name)


@pytest.mark.parametrize("form", ["Ts", "Timestamp"])
async def test_restore_to_ts_takes_a_bson_timestamp_too(
    oplog_backup: Any, mongo_uri: str, new_database: str, form: str
) -> None:
    dest, database, point, source = oplog_backup
    to_ts = point if form == "Ts" else point.to_bson()
    report = await mongosnap.restore(
        mongo_uri, dest, database=database, to_database=new_database, to_ts=to_ts
    )
    assert report.restored_to == str(point)
    with MongoClient(mongo_uri) as client:
        got = [bson.encode(d) for d in client[new_database]["c"].find().sort("_id", 1)]
    assert got == source


async def test_restore_to_ts_of_another_type_is_a_type_error(
    oplog_backup: Any, mongo_uri: str, new_database: str
) -> None:
    dest, database, point, _ = oplog_backup
    with pytest.raises(TypeError, match="not str"):
        await mongosnap.restore(
            mongo_uri,
            dest,
            database=database,
            to_database=new_database,
            to_ts=str(point),  # type: ignore[arg-type]
        )
    with MongoClient(mongo_uri) as client:
        assert new_database not in client.list_database_names()


async def test_a_synchronous_client_is_a_type_error_with_a_clear_message(mongo_uri: str) -> None:
    with MongoClient(mongo_uri, connect=False) as client:
        with pytest.raises(TypeError, match="synchronous pymongo MongoClient") as caught:
            await Source.connect(client)  # type: ignore[arg-type]
        assert "pass a pymongo AsyncMongoClient" in str(caught.value)
        with pytest.raises(TypeError, match="AsyncMongoClient, a Motor client, or a URI"):
            await mongosnap.backup(client, "/nonexistent", database="db")  # type: ignore[arg-type]
