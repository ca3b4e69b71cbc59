"""``restore`` replays the oplog: the archive's own member (to its consistent
point) and, with ``--to-ts``/``--to-time``, the chunks under ``oplog/`` up to
a chosen instant. Checked byte for byte on the oplog FerretDB."""

from __future__ import annotations

import asyncio
import json
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
import pytest
from helpers import run_cli, server_documents, split_bson
from oplog_support import WAIT, wait_for
from pymongo import MongoClient
from test_backup_oplog import KeyedWriter, expected_state, op_number, seeded_document

import mongosnap
from mongosnap.archive.manifest import Manifest
from mongosnap.oplog.position import Ts

COLLECTIONS = ("live", "other")


@dataclass(frozen=True)
class LiveBackup:
    """A backup --oplog taken while both collections were written to."""

    dest: Path
    database: str
    key: str
    last: Ts
    member: list[bytes]
    dumped: dict[str, list[bytes]]


def _seed(uri: str, database: str) -> None:
    with MongoClient(uri) as client:
        for name in COLLECTIONS:
            client[database][name].insert_many([seeded_document(i) for i in range(400)])


def _writers(uri: str, database: str) -> list[KeyedWriter]:
    writers = []
    for name in COLLECTIONS:
        writer = KeyedWriter(uri, database)
        writer.coll = writer.client[database][name]
        writers.append(writer)
    return writers


def _stop(writers: list[KeyedWriter]) -> None:
    for writer in writers:
        writer.stop.set()
        writer.thread.join(WAIT)
        writer.client.close()


def _extract(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@pytest.fixture(scope="module")
def live_backup(mongo_oplog_uri: str, tmp_path_factory: pytest.TempPathFactory) -> LiveBackup:
    dest = tmp_path_factory.mktemp("live")
    database = f"pitr_{uuid.uuid4().hex[:10]}"
    _seed(mongo_oplog_uri, database)
    writers = _writers(mongo_oplog_uri, database)
    for writer in writers:
        writer.thread.start()
    wait_for(lambda: all(w.done > 30 for w in writers), "the writers to start")
    try:
        backup = mongosnap.backup(
            mongo_oplog_uri, str(dest), database=database, oplog=True, batch_size=20
        )
        result = asyncio.run(backup)
    finally:
        _stop(writers)
    manifest = Manifest.from_json((dest / result.manifest_key).read_bytes())
    assert manifest.oplog is not None
    members = _extract(dest / result.archive_key)
    dumped = {n: split_bson(members[f"dump/{database}/{n}.bson"]) for n in COLLECTIONS}
    member = split_bson(members["dump/oplog.bson"])
    last = Ts(*manifest.oplog.last_ts)
    return LiveBackup(dest, database, result.archive_key, last, member, dumped)


def _by_id(docs: list[bytes]) -> list[bytes]:
    return sorted(docs, key=lambda d: bson.decode(d)["_id"])


def _at_consistent_point(backup: LiveBackup, name: str) -> list[bytes]:
    """The collection's state at the archive's consistent point, from the writer's record."""
    mine = [bson.decode(e) for e in backup.member]
    ops = [op_number(e) for e in mine if e["ns"] == f"{backup.database}.{name}"]
    assert ops, f"no write to {name} overlapped the dump"
    return expected_state(max(ops) + 1)


@pytest.fixture
def target_database(mongo_uri: str) -> Iterator[str]:
    name = f"restored_{uuid.uuid4().hex[:10]}"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


def _restore(backup: LiveBackup, uri: str, target: str, *extra: str) -> dict[str, Any]:
    done = run_cli(
        *("restore", backup.key, str(backup.dest), uri, backup.database),
        *("--to-database", target, "--json", *extra),
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_restore_replays_the_archives_oplog_to_its_consistent_point(
    live_backup: LiveBackup, mongo_uri: str, target_database: str
) -> None:
    result = _restore(live_backup, mongo_uri, target_database)
    for name in COLLECTIONS:
        restored = _by_id(server_documents(mongo_uri, target_database, name))
        assert restored == _at_consistent_point(live_backup, name), name
        assert restored != _by_id(live_backup.dumped[name]), "the replay changed nothing"
    assert result["restored_to"] == str(live_backup.last)
    assert result["replay"]["entries"] == len(live_backup.member)
    assert result["oplog_replayed"] == sum(result["replay"]["applied"].values()) > 0
    assert result["replay"]["namespaces"] == [f"{target_database}.{n}" for n in COLLECTIONS]


def test_restore_replays_only_the_restored_namespaces(
    live_backup: LiveBackup, mongo_uri: str, target_database: str
) -> None:
    result = _restore(live_backup, mongo_uri, target_database, "--collection", "live")
    restored = _by_id(server_documents(mongo_uri, target_database, "live"))
    assert restored == _at_consistent_point(live_backup, "live")
    with MongoClient(mongo_uri) as client:
        assert client[target_database].list_collection_names() == ["live"]
    assert result["replay"]["namespaces"] == [f"{target_database}.live"]
    assert result["replay"]["skipped"]["unselected"] > 0


def test_restore_with_no_oplog_replay_restores_the_dump_as_it_is(
    live_backup: LiveBackup, mongo_uri: str, target_database: str
) -> None:
    result = _restore(live_backup, mongo_uri, target_database, "--no-oplog-replay")
    for name in COLLECTIONS:
        restored = _by_id(server_documents(mongo_uri, target_database, name))
        assert restored == _by_id(live_backup.dumped[name]), name
    assert result["oplog_replayed"] == 0
    assert result["restored_to"] is None and result["replay"] is None
