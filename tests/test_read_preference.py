"""backup --read-preference: the mode reaches the server's find commands, and a
mode no member can serve is a typed error within the connect timeout.

FerretDB is one server. Started with --repl-set-name (the oplog test server)
it answers hello as a replica set primary, so a client given ``replicaSet``
sees a replica set with a primary and no secondary: non-primary modes are sent
as ``$readPreference``, and ``secondary`` finds no member. Against a standalone
server drivers send no read preference and every mode reads from it.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CommandLog, run_cli, seed, server_documents, split_bson, tar_members
from pymongo import AsyncMongoClient, MongoClient

from mongosnap import backup
from mongosnap._errors import UsageError


@pytest.fixture
def replica_database(mongo_oplog_uri: str) -> Iterator[tuple[str, str]]:
    """A seeded database on the FerretDB that answers as a replica set primary."""
    uri = mongo_oplog_uri.rstrip("/") + "/?replicaSet=rs0"
    name = f"mongosnap_rp_{uuid.uuid4().hex[:10]}"
    seed(mongo_oplog_uri, name, {"a": 30, "b": 5})
    yield uri, name
    with MongoClient(mongo_oplog_uri) as client:
        client.drop_database(name)


@pytest.mark.parametrize("mode", ["secondaryPreferred", "primaryPreferred", "nearest"])
async def test_the_mode_reaches_every_find(
    mode: str, replica_database: tuple[str, str], tmp_path: Path
) -> None:
    uri, name = replica_database
    log = CommandLog()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, event_listeners=[log])
    try:
        report = await backup(client, str(tmp_path), database=name, read_preference=mode)
    finally:
        await client.close()
    finds = [command for sent, command in log.commands if sent == "find"]
    assert len(finds) == 2
    assert all(command.get("$readPreference") == {"mode": mode} for command in finds)
    assert report.documents == 35


async def test_without_a_mode_finds_go_to_the_primary(
    replica_database: tuple[str, str], tmp_path: Path
) -> None:
    uri, name = replica_database
    log = CommandLog()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, event_listeners=[log])
    try:
        await backup(client, str(tmp_path), database=name)
    finally:
        await client.close()
    finds = [command for sent, command in log.commands if sent == "find"]
    assert finds and all("$readPreference" not in command for command in finds)


def test_secondary_without_one_is_a_typed_error_not_a_hang(
    replica_database: tuple[str, str], tmp_path: Path
) -> None:
    uri, name = replica_database
    done = run_cli(
        *("backup", str(tmp_path), "--uri", uri, name),
        *("--read-preference", "secondary", "--connect-timeout", "2", "--json"),
    )
    assert done.returncode == 11, done.stderr
    error = json.loads(done.stdout.splitlines()[-1])["error"]
    assert error["type"] == "ServerUnreachable"
    assert "matches the read preference" in error["message"]
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no archive, no claim, no upload left


def test_secondary_against_a_standalone_reads_from_it(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    seed(mongo_uri, new_database, {"a": 12})
    args = ["backup", str(tmp_path), mongo_uri.split("://")[1].rstrip("/"), new_database]
    done = run_cli(*args, "--read-preference", "secondary", "--json")
    assert done.returncode == 0, done.stderr
    archive = tmp_path / json.loads(done.stdout)["archive_key"]
    data = tar_members(archive.read_bytes())[f"dump/{new_database}/a.bson"]
    assert split_bson(data) == server_documents(mongo_uri, new_database, "a")


async def test_an_unknown_mode_is_a_usage_error(mongo_uri: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="read preference"):
        await backup(mongo_uri, str(tmp_path), database="x", read_preference="secondaryish")
    done = run_cli("backup", str(tmp_path), "localhost", "x", "--read-preference", "tertiary")
    assert done.returncode == 2


# -- oplog --read-preference: one member, chosen once, read through a direct connection


def test_the_direct_uri_names_one_member_and_keeps_the_rest() -> None:
    from mongosnap.source import _direct_uri

    uri = "mongodb://u:p%40ss@h1:1,h2:2/admin?replicaSet=rs0&directConnection=false&tls=true"
    assert _direct_uri(uri, "h2", 2) == (
        "mongodb://u:p%40ss@h2:2/admin?replicaSet=rs0&tls=true&directConnection=true"
    )
    assert _direct_uri("mongodb://h1", "h1", 27017) == "mongodb://h1:27017/?directConnection=true"
    assert _direct_uri("mongodb://[::1]:5/", "::1", 5) == "mongodb://[::1]:5/?directConnection=true"


@pytest.mark.parametrize("mode", ["secondaryPreferred", "nearest"])
async def test_the_oplog_reader_is_pinned_to_the_member_the_mode_chose(
    mode: str, mongo_oplog_uri: str
) -> None:
    from mongosnap.oplog.tail import bound
    from mongosnap.source import Source

    uri = mongo_oplog_uri.rstrip("/") + "/?replicaSet=rs0"
    src = await Source.connect_pinned(uri, mode, connect_timeout=5)
    try:
        description = src._client.topology_description
        assert description.topology_type_name == "Single"  # a direct connection
        [server] = description.server_descriptions()
        assert f"{server[0]}:{server[1]}" == src.hosts
        assert await bound(src, newest=True) is not None  # it reads the oplog there
    finally:
        await src.aclose()


def test_oplog_with_a_mode_no_member_serves_exits_11(mongo_oplog_uri: str, tmp_path: Path) -> None:
    uri = mongo_oplog_uri.rstrip("/") + "/?replicaSet=rs0"
    done = run_cli(
        "oplog", str(tmp_path / "dest"), "--uri", uri, "--read-preference", "secondary",
        "--connect-timeout", "1",
    )  # fmt: skip
    assert done.returncode == 11, done.stderr
    assert "matches the read preference" in done.stderr and "Traceback" not in done.stderr


def test_oplog_read_preference_refusals(tmp_path: Path) -> None:
    from mongosnap.source import Source

    listed = run_cli("oplog", str(tmp_path), "--list", "--read-preference", "nearest")
    assert listed.returncode == 2 and "--list takes only DEST" in listed.stderr
    with pytest.raises(UsageError, match="mongodb:// URI"):
        import asyncio

        asyncio.run(Source.connect_pinned("mongodb+srv://cluster.example/", "nearest"))


async def test_the_archiver_archives_through_the_pinned_member(
    replica_database: tuple[str, str], tmp_path: Path
) -> None:
    """End to end: archive_oplog with a read preference writes a chunk holding
    a write made after it started."""
    import asyncio

    from mongosnap.oplog.archiver import archive_oplog

    uri, name = replica_database
    written = asyncio.Event()
    chunks: list[int] = []

    def chunk(info: object) -> None:
        chunks.append(getattr(info, "count", 0))
        written.set()

    task = asyncio.create_task(
        archive_oplog(
            uri, str(tmp_path / "dest"), interval=0.3, start="now", settle=0,
            read_preference="nearest", on_chunk=chunk,
        )
    )  # fmt: skip
    try:
        for _ in range(600):  # the reader is ready once it has read the newest entry
            if task.done():
                break
            with MongoClient(uri) as client:
                client[name].late.insert_one({"after": True})
            try:
                await asyncio.wait_for(written.wait(), 0.5)
                break
            except TimeoutError:
                continue
        assert written.is_set(), task.exception() if task.done() else "no chunk"
        assert sum(chunks) >= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
