"""The client protocol: PyMongo's and Motor's async clients fit it, statically and at runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient, MongoClient

from mongosnap import AsyncMongoClientLike, UsageError
from mongosnap.source import Source

ROOT = Path(__file__).resolve().parent.parent


async def test_pymongo_and_motor_clients_fit_the_protocol_and_connect(mongo_uri: str) -> None:
    pymongo_client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_uri)
    motor_client: AsyncIOMotorClient[dict[str, object]] = AsyncIOMotorClient(mongo_uri)
    try:
        for client in (pymongo_client, motor_client):
            assert isinstance(client, AsyncMongoClientLike)
            async with await Source.connect(client) as source:  # drives it, does not own it
                assert await source.server_version()
    finally:
        await pymongo_client.close()
        motor_client.close()


@pytest.mark.parametrize("thing", [42, b"mongodb://h/", object(), None])
async def test_what_is_no_client_is_not_one_and_is_refused(thing: object) -> None:
    assert not isinstance(thing, AsyncMongoClientLike)
    with pytest.raises(UsageError, match="AsyncMongoClient or Motor client"):
        await Source.connect(thing)  # type: ignore[arg-type]


async def test_a_synchronous_client_is_no_client_and_is_refused(mongo_uri: str) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(mongo_uri, connect=False)
    try:
        with pytest.raises(TypeError, match="synchronous pymongo MongoClient"):
            await Source.connect(client)  # type: ignore[arg-type]
    finally:
        client.close()


def test_motor_and_pymongo_clients_type_check_as_a_source(tmp_path: Path) -> None:
    """mypy --strict accepts both async clients and a URI where the API takes a source,
    not an int nor a synchronous MongoClient; and a Ts, bson Timestamp or datetime
    wherever it takes an oplog instant, not an int."""
    snippet = tmp_path / "uses_api.py"
    snippet.write_text(
        "from motor.motor_asyncio import AsyncIOMotorClient\n"
        "from pymongo import AsyncMongoClient, MongoClient\n"
        "import mongosnap\n"
        "from mongosnap import MongoSource\n\n"
        "async def main(motor: AsyncIOMotorClient[dict[str, object]],"
        " pymongo: AsyncMongoClient[dict[str, object]]) -> None:\n"
        "    for source in (motor, pymongo, 'mongodb://h/', 'h:27017'):\n"
        "        chosen: MongoSource = source\n"
        "        await mongosnap.backup(chosen, '/tmp/x', database='db')\n"
        "    await mongosnap.heal(motor, '/tmp/x', database='db', collections=['c'])\n"
        "    await mongosnap.restore(pymongo, '/tmp/x', database='db')\n"
        "    await mongosnap.backup(42, '/tmp/x', database='db')\n"
        "    await mongosnap.backup(MongoClient(), '/tmp/x', database='db')\n"
        "    from datetime import UTC, datetime\n"
        "    from bson import Timestamp\n"
        "    from mongosnap.oplog import replay\n"
        "    for ts in (mongosnap.Ts(1, 2), Timestamp(1, 2), datetime.now(UTC)):\n"
        "        await mongosnap.restore(pymongo, '/tmp/x', database='db', to_ts=ts)\n"
        "        await replay(motor, [], until=ts)\n"
        "    await mongosnap.restore(pymongo, '/tmp/x', database='db', to_ts=12)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, done.stdout
    assert "uses_api.py:12:" in errors[0] and '"int"' in errors[0], done.stdout
    assert "uses_api.py:13:" in errors[1] and '"MongoClient[' in errors[1], done.stdout
    assert "uses_api.py:20:" in errors[2] and '"int"' in errors[2], done.stdout
