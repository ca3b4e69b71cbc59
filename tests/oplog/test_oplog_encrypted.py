"""Encrypted oplog chunks (``mongosnap oplog --encrypt-to``) on the oplog FerretDB.

One archiver run writes age-encrypted chunks around a plain ``backup
--oplog``; the restore to the last write with ``--identity`` is compared
byte for byte with the collection, the real age CLI opens a chunk, and
``oplog --list`` and ``prune`` work with no key. Without a key a restore or
heal stops with NoIdentity before anything is staged.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bson
import pytest
from helpers import run_cli, server_documents, split_bson
from oplog_support import ArchiverProcess, Writer, newest_ts, ts_of, wait_for
from pymongo import MongoClient
from testbed import bin_dir

import mongosnap
from mongosnap.crypto.keys import X25519Identity
from mongosnap.oplog.chunks import ChunkInfo
from mongosnap.oplog.position import Ts


@dataclass(frozen=True)
class Encrypted:
    uri: str
    dest: Path
    database: str
    archive: str
    key: Path
    wrong_key: Path
    final: list[bytes]
    """The collection after the last write, by _id."""
    last: Ts
    """The ts of the last write."""


def _by_id(docs: list[bytes]) -> list[bytes]:
    return sorted(docs, key=lambda d: bson.decode(d)["_id"])


def _key_file(path: Path) -> str:
    identity = X25519Identity.generate()
    path.write_text(identity.export() + "\n")
    return str(identity.recipient)


def _sidecars(dest: Path) -> list[ChunkInfo]:
    found = []
    for path in sorted((dest / "oplog").glob("*.json")):
        if not path.name.endswith(".gap.json"):
            key = str(path.relative_to(dest))
            found.append(ChunkInfo.from_json(path.read_bytes(), key))
    return found


@pytest.fixture(scope="module")
def enc(mongo_oplog_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encrypted]:
    uri, database = mongo_oplog_uri, f"encop_{uuid.uuid4().hex[:10]}"
    work = tmp_path_factory.mktemp("encop")
    dest = work / "dest"
    key, wrong = work / "key.txt", work / "wrong.txt"
    recipient = _key_file(key)
    _key_file(wrong)
    archiver = ArchiverProcess(
        dest, uri, "--interval", "0.3", "--start", "now", "--settle", "0", "--encrypt-to", recipient
    )
    writer = Writer(uri, database)
    try:
        writer.start()
        wait_for(lambda: writer.count > 30, "the writer to start")
        archiver.wait_read_past(newest_ts(uri))
        # a chunk stored before the backup, so prune has one wholly before its point
        wait_for(lambda: bool(_sidecars(dest)), "a chunk stored before the archive")
        archived = asyncio.run(mongosnap.backup(uri, str(dest), database=database, oplog=True))
        mark = writer.count
        wait_for(lambda: writer.count > mark + 60, "writes after the archive")
    finally:
        writer.stop()
        archiver.wait_read_past(newest_ts(uri))
        assert archiver.terminate() == 143
    final = _by_id(server_documents(uri, database, "events"))
    with MongoClient(uri) as client:
        last = client["local"]["oplog.rs"].find_one(
            {"ns": f"{database}.events"}, sort=[("$natural", -1)]
        )
    assert last is not None
    try:
        yield Encrypted(
            uri, dest, database, archived.archive_key, key, wrong, final, Ts.from_bson(last["ts"])
        )
    finally:
        with MongoClient(uri) as client:
            client.drop_database(database)


@pytest.fixture
def target(enc: Encrypted) -> Iterator[str]:
    name = f"encop_restored_{uuid.uuid4().hex[:8]}"
    yield name
    with MongoClient(enc.uri) as client:
        client.drop_database(name)


def _restore(enc: Encrypted, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        *("restore", "latest", str(enc.dest), enc.uri, enc.database, "--to-database", target),
        *("--to-ts", str(enc.last), "--json", *extra),
    )


def _collections(uri: str, database: str) -> list[str]:
    with MongoClient(uri) as client:
        return client[database].list_collection_names()


def test_chunks_are_age_files_with_clear_sidecars_naming_no_namespace(enc: Encrypted) -> None:
    infos = _sidecars(enc.dest)
    assert len(infos) >= 2
    for info in infos:
        assert info.encrypted and info.object_key.endswith(".bson.gz.age")
        sidecar = (enc.dest / info.key).read_text()
        assert enc.database not in sidecar and json.loads(sidecar)["encrypted"] is True
        data = (enc.dest / info.object_key).read_bytes()
        assert data.startswith(b"age-encryption.org/v1\n")
        assert enc.database.encode() not in data
    age = bin_dir() / "age"
    assert age.is_file(), f"{age} missing: run scripts/setup"
    chunk = next(i for i in infos if i.last_ts > infos[0].last_ts)
    plain = subprocess.run(
        [str(age), "-d", "-i", str(enc.key), str(enc.dest / chunk.object_key)],
        check=True,
        capture_output=True,
    ).stdout
    entries = split_bson(gzip.decompress(plain))
    assert len(entries) == chunk.count
    assert (ts_of(entries[0]), ts_of(entries[-1])) == (chunk.first_ts, chunk.last_ts)


def test_restore_to_the_last_write_with_the_identity_is_byte_identical(
    enc: Encrypted, target: str
) -> None:
    done = _restore(enc, target, "--identity", str(enc.key))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["restored_to"] == str(enc.last)
    assert _by_id(server_documents(enc.uri, target, "events")) == enc.final


@pytest.mark.parametrize("keys", [(), ("--identity", "WRONG")], ids=["no key", "wrong key"])
def test_restore_without_the_key_stops_before_anything_is_written(
    enc: Encrypted, target: str, keys: tuple[str, ...]
) -> None:
    keys = tuple(str(enc.wrong_key) if k == "WRONG" else k for k in keys)
    done = _restore(enc, target, *keys)
    assert done.returncode == 61, done.stderr
    assert "oplog chunk" in done.stderr and "Traceback" not in done.stderr
    assert _collections(enc.uri, target) == []


async def test_heal_replays_encrypted_chunks_with_the_key_and_stops_without(
    enc: Encrypted,
) -> None:
    database = enc.database
    with MongoClient(enc.uri) as client:
        client[database].drop_collection("events")
    refused = await asyncio.to_thread(run_cli, "heal", str(enc.dest), enc.uri, database, "events")
    assert refused.returncode == 61, refused.stderr
    with MongoClient(enc.uri) as client:
        assert client[database].list_collection_names() == []  # nothing staged or published
    report = await mongosnap.heal(
        enc.uri,
        str(enc.dest),
        database=database,
        collections=["events"],
        keys=mongosnap.Keys([enc.key]),
    )
    assert report.ok, report.to_dict()
    assert _by_id(server_documents(enc.uri, database, "events")) == enc.final
    assert report.replays and report.replays[0].entries >= 60


def test_list_and_prune_need_no_key(enc: Encrypted, tmp_path: Path) -> None:
    listed = run_cli("oplog", str(enc.dest), "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    [span] = json.loads(listed.stdout)["spans"]
    assert span["last_ts"] == str(max(i.last_ts for i in _sidecars(enc.dest)))
    copy = tmp_path / "dest"
    shutil.copytree(enc.dest, copy)
    pruned = run_cli("prune", str(copy), "--keep-last", "1", "--json")
    assert pruned.returncode == 0, pruned.stderr
    deleted = json.loads(pruned.stdout)["oplog"]["chunks_deleted"]
    assert deleted and all(k.endswith(".bson.gz.age") for k in deleted)
    for key in deleted:
        assert not (copy / key).exists() and not (copy / f"{key}.json").exists()
    kept = _sidecars(copy)
    assert kept and min(i.first_ts for i in kept) <= Ts.parse(
        json.loads(pruned.stdout)["oplog"]["kept_from"]
    )


def test_heal_undoes_the_deletes_through_the_key_and_stops_without_it(enc: Encrypted) -> None:
    """heal --restore-missing of the emptied collection reads the encrypted chunks
    with --identity and puts back what the writer deleted since the archive; without
    the key it stops (NoIdentity) and writes nothing. (It empties the collection: last.)"""
    with MongoClient(enc.uri) as client:
        coll = client[enc.database]["events"]
        coll.delete_many({})  # not archived: the archiver has stopped
        argv = ("heal", str(enc.dest), "--uri", enc.uri, enc.database, "events")
        argv += ("--restore-missing", "--json")
        refused = run_cli(*argv)
        assert refused.returncode == 61, refused.stderr
        assert coll.count_documents({}) == 0
        done = run_cli(*argv, "--identity", str(enc.key))
        assert done.returncode == 0, done.stderr
        [damage] = json.loads(done.stdout)["damaged"]
        assert (damage["source"], damage["status"]) == ("oplog", "restored")
        assert "not archived yet" in done.stderr  # the delete_many above
        since, until = Ts.parse(damage["consistent_point"]), Ts.parse(damage["oplog_to"])
        ns = f"{enc.database}.events"
        entries = [bson.decode(e) for e in split_bson(b"".join(
            client["local"]["oplog.rs"].find_raw_batches({"ns": ns})
        ))]  # fmt: skip
    deleted = {
        e["o"]["_id"] for e in entries if e["op"] == "d" and since < Ts.from_bson(e["ts"]) <= until
    }
    inserted = {e["o"]["_id"]: e["o"] for e in entries if e["op"] == "i"}
    assert deleted and not {e["o2"]["_id"] for e in entries if e["op"] == "u"} & deleted
    assert damage["deleted"] == damage["inserted"] == len(deleted)
    expected = sorted(bson.encode(inserted[i]) for i in deleted)
    assert sorted(server_documents(enc.uri, enc.database, "events")) == expected
