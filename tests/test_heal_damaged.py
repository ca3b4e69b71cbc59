"""Heal of present but damaged collections (emptied, or shrunk past --shrink-threshold)
against FerretDB: reported without --restore-missing, their missing documents put
back byte for byte with it, live documents never overwritten, concurrent writes kept."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import bson
import pytest
from helpers import run_cli, seed, server_documents
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from mongosnap import backup, heal
from mongosnap.pipelines import damage

SIZES = {"apps": 10, "users": 300}


def host_of(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


@pytest.fixture
def archived(tmp_path: Path, mongo_uri: str, new_database: str) -> tuple[str, list[bytes]]:
    """A backup of a seeded database; (destination, the users' documents it holds)."""
    seed(mongo_uri, new_database, SIZES)
    dest = str(tmp_path / "dest")
    import asyncio

    asyncio.run(backup(mongo_uri, dest, database=new_database))
    return dest, sorted(server_documents(mongo_uri, new_database, "users"))


def users(uri: str, database: str) -> Any:
    return MongoClient(uri)[database].users


def heal_cli(uri: str, dest: str, database: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    done = run_cli("heal", dest, host_of(uri), database, "apps", "users", "--json", *extra)
    report = json.loads(done.stdout.splitlines()[0]) if done.stdout else {}  # then any error
    return done.returncode, report, done.stderr


def test_an_emptied_collection_is_reported_and_left_alone(
    archived: tuple[str, list[bytes]], mongo_uri: str, new_database: str
) -> None:
    dest, _ = archived
    coll = users(mongo_uri, new_database)
    coll.delete_many({})
    code, report, err = heal_cli(mongo_uri, dest, new_database)
    assert code == 41, err
    [damage] = report["damaged"]
    assert (damage["name"], damage["reason"], damage["status"]) == ("users", "emptied", "reported")
    assert (damage["archived"], damage["live"], damage["inserted"]) == (300, 0, 0)
    assert report["unrepaired"] == ["users"] and report["ok"] is False
    assert "damaged: users; nothing written" in err
    assert coll.count_documents({}) == 0
    coll.database.client.close()


def test_restore_missing_heals_an_emptied_collection_byte_for_byte(
    archived: tuple[str, list[bytes]], mongo_uri: str, new_database: str
) -> None:
    dest, before = archived
    users(mongo_uri, new_database).delete_many({})
    done = run_cli("heal", dest, host_of(mongo_uri), new_database, "users", "--restore-missing")
    assert done.returncode == 0, done.stderr
    assert "300 missing documents restored" in done.stdout
    assert "deleted on purpose since the archive came back too" in done.stdout
    assert sorted(server_documents(mongo_uri, new_database, "users")) == before
    again = run_cli("heal", dest, host_of(mongo_uri), new_database, "users", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["damaged"] == []


@pytest.mark.parametrize(("threshold", "damaged"), [("40", False), ("25", True)])
def test_shrink_under_and_over_the_threshold(
    archived: tuple[str, list[bytes]],
    mongo_uri: str,
    new_database: str,
    threshold: str,
    damaged: bool,
) -> None:
    dest, _ = archived
    coll = users(mongo_uri, new_database)
    coll.delete_many({"i": {"$lt": 90}})  # 30 % of 300
    code, report, err = heal_cli(mongo_uri, dest, new_database, "--shrink-threshold", threshold)
    assert code == (41 if damaged else 0), err
    found = [(d["name"], d["live"], d["reason"]) for d in report["damaged"]]
    assert found == ([("users", 210, f"shrank by more than {threshold}%")] if damaged else [])
    assert coll.count_documents({}) == 210  # nothing written either way
    coll.database.client.close()


def test_live_documents_are_never_overwritten(
    archived: tuple[str, list[bytes]], mongo_uri: str, new_database: str
) -> None:
    dest, before = archived
    coll = users(mongo_uri, new_database)
    coll.update_many({"i": {"$gte": 200}}, {"$set": {"s": "changed live"}})
    coll.delete_many({"i": {"$lt": 200}})
    changed = sorted(server_documents(mongo_uri, new_database, "users"))
    code, report, err = heal_cli(
        mongo_uri, dest, new_database, "--shrink-threshold", "10", "--restore-missing"
    )
    assert code == 0, err
    assert [(d["status"], d["inserted"]) for d in report["damaged"]] == [("restored", 200)]
    after = server_documents(mongo_uri, new_database, "users")
    deleted_back = [d for d in before if bson.decode(d)["i"] < 200]
    assert sorted(after) == sorted(changed + deleted_back)
    coll.database.client.close()


def test_dry_run_writes_nothing(
    archived: tuple[str, list[bytes]], mongo_uri: str, new_database: str
) -> None:
    dest, _ = archived
    users(mongo_uri, new_database).delete_many({})
    code, report, err = heal_cli(mongo_uri, dest, new_database, "--restore-missing", "--dry-run")
    assert code == 0, err
    assert [d["status"] for d in report["damaged"]] == ["would restore"]
    assert server_documents(mongo_uri, new_database, "users") == []


async def test_a_concurrent_writer_keeps_its_writes(
    archived: tuple[str, list[bytes]],
    mongo_uri: str,
    new_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dest, before = archived
    monkeypatch.setattr(damage, "BATCH", 10)  # 30 round trips for the writer to race
    ids = [bson.decode(d)["_id"] for d in before]
    with MongoClient(mongo_uri) as client:
        coll = client[new_database].users
        coll.delete_many({})
        written: list[Any] = []
        stop = threading.Event()

        def write() -> None:
            """Once the heal has begun inserting: archived _ids from the end, and new ones."""
            while coll.find_one({}) is None and not stop.is_set():
                time.sleep(0.001)
            for k, _id in enumerate(reversed(ids)):
                for doc in ({"_id": _id, "writer": k}, {"_id": f"new{k}", "writer": k}):
                    if stop.is_set():
                        return
                    try:
                        coll.insert_one(doc)
                    except DuplicateKeyError:  # the heal put it back first
                        continue
                    written.append(doc["_id"])

        writer = threading.Thread(target=write)
        writer.start()
        try:
            report = await heal(
                mongo_uri,
                dest,
                database=new_database,
                collections=["users"],
                restore_missing=True,
            )
        finally:
            stop.set()
            writer.join()
        assert [d.status for d in report.damaged] == ["restored"]
        mine = {d["_id"]: d for d in coll.find({"writer": {"$exists": True}})}
        assert set(mine) == set(written)  # every write kept...
        assert all(set(doc) == {"_id", "writer"} for doc in mine.values())  # ...as written
        taken = {bson.encode({"": i}) for i in written}
        restored = [d for d in before if bson.encode({"": bson.decode(d)["_id"]}) not in taken]
        live = set(server_documents(mongo_uri, new_database, "users"))
        assert set(restored) <= live  # every archived document the writer did not take is back
        assert coll.count_documents({}) == len(restored) + len(written)
        assert report.damaged[0].inserted == len(restored)


def test_restore_missing_reads_an_encrypted_archive_with_its_key(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    """The damage check and the repair read the sealed manifest and the member
    through the key; without it the encrypted archive is passed over, unread."""
    from mongosnap.crypto.keys import X25519Identity

    seed(mongo_uri, new_database, SIZES)
    identity = X25519Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(identity.export() + "\n")
    dest = str(tmp_path / "dest")
    made = run_cli(
        "backup", dest, host_of(mongo_uri), new_database, "--encrypt-to", str(identity.recipient)
    )
    assert made.returncode == 0, made.stderr
    before = sorted(server_documents(mongo_uri, new_database, "users"))
    users(mongo_uri, new_database).delete_many({"i": {"$lt": 200}})

    code, report, err = heal_cli(mongo_uri, dest, new_database, "--restore-missing")
    assert code == 0 and report["damaged"] == [], err  # no key: nothing it could compare with
    code, report, err = heal_cli(
        mongo_uri, dest, new_database, "--restore-missing", "--shrink-threshold", "10",
        "--identity", str(key),
    )  # fmt: skip
    assert code == 0, err
    [damage] = report["damaged"]
    assert (damage["archived"], damage["live"], damage["inserted"]) == (300, 100, 200)
    assert sorted(server_documents(mongo_uri, new_database, "users")) == before
