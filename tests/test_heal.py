"""Heal against real FerretDB and real storage: exactly the vanished, byte for byte."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CommandLog, Destination, seed, server_documents, split_bson
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient, MongoClient

import mongosnap
from mongosnap import MemoryStorage, backup, heal
from mongosnap.archive.manifest import Manifest, manifest_key
from mongosnap.pipelines import staging
from mongosnap.pipelines.lease import LEASES
from mongosnap.pipelines.staging import TEMP_PREFIX

SIZES = {"apps": 300, "users": 120, "teams": 40, "events": 200}
LEASE = 10.0
"""MONGOSNAP_LEASE_SECONDS for the kill -9 test: a rerun fits well within it."""


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    with MongoClient(mongo_uri) as client:
        client[new_database].create_collection("ring", capped=True, size=65536, max=50)
        client[new_database].ring.insert_many([{"n": n} for n in range(30)])
    return new_database


def snapshot(uri: str, database: str, name: str) -> dict[str, Any]:
    """Documents as raw bytes, indexes and options: what heal must bring back."""
    with MongoClient(uri) as client:
        coll = client[database][name]
        indexes = sorted((ix["name"], dict(ix["key"])) for ix in coll.list_indexes())
        unique = sorted(ix["name"] for ix in coll.list_indexes() if ix.get("unique"))
        options = coll.options()
    return {
        "documents": sorted(server_documents(uri, database, name)),
        "indexes": indexes,
        "unique": unique,
        "options": options,
    }


def drop(uri: str, database: str, *names: str) -> None:
    with MongoClient(uri) as client:
        for name in names:
            client[database].drop_collection(name)


def collection_names(uri: str, database: str) -> set[str]:
    with MongoClient(uri) as client:
        return set(client[database].list_collection_names())


async def test_heal_restores_exactly_the_vanished(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    watched = [*SIZES, "ring"]
    before = {name: snapshot(mongo_uri, seeded, name) for name in watched}
    result = await backup(mongo_uri, destination.url, database=seeded, s3=destination.s3)
    drop(mongo_uri, seeded, "apps", "ring")
    with MongoClient(mongo_uri) as client:  # the survivors move on after the backup
        client[seeded].users.insert_one({"after": "backup"})

    report = await heal(
        mongo_uri, destination.url, database=seeded, collections=watched, s3=destination.s3
    )

    assert report.ok
    assert sorted(report.vanished) == ["apps", "ring"]
    assert sorted(o.name for o in report.restored) == ["apps", "ring"]
    assert {o.status for o in report.restored} == {"restored"}
    for name in ("apps", "ring"):
        assert snapshot(mongo_uri, seeded, name) == before[name], name
    users = snapshot(mongo_uri, seeded, "users")
    assert len(users["documents"]) == SIZES["users"] + 1  # untouched
    assert report.bytes_fetched < result.bytes_out / 2
    assert not [c for c in collection_names(mongo_uri, seeded) if c.startswith(TEMP_PREFIX)]


async def test_nothing_vanished(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    report = await heal(mongo_uri, tmp_path / "none", database=seeded, collections=["apps"])
    assert report.ok and report.vanished == [] and report.restored == []


async def test_no_backups_at_all(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    drop(mongo_uri, seeded, "apps")
    with pytest.raises(mongosnap.NoBackupsFound):
        await heal(mongo_uri, tmp_path, database=seeded, collections=["apps"])


async def test_still_missing_is_reported(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    await backup(mongo_uri, tmp_path, database=seeded, include=["users"])
    drop(mongo_uri, seeded, "apps")
    report = await heal(mongo_uri, tmp_path, database=seeded, collections=["apps", "users"])
    assert report.missing == ["apps"]
    assert not report.ok


async def test_a_corrupt_range_in_the_newest_archive_comes_from_the_next(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    older = await backup(mongo_uri, tmp_path, database=seeded)
    newer = await backup(mongo_uri, tmp_path, database=seeded)
    assert newer.archive_key > older.archive_key
    path = tmp_path / newer.archive_key
    manifest = Manifest.from_json((tmp_path / manifest_key(newer.archive_key)).read_bytes())
    entry = next(e for e in manifest.collections if e.name == "apps")
    assert entry.bson is not None
    data = bytearray(path.read_bytes())
    middle = (entry.bson.offset + entry.bson.end) // 2
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))
    before = snapshot(mongo_uri, seeded, "apps")
    drop(mongo_uri, seeded, "apps")

    warnings: list[str] = []
    report = await heal(
        mongo_uri, tmp_path, database=seeded, collections=["apps"], warn=warnings.append
    )

    # A bad collection range costs that collection from that archive only:
    # it is reported with its cause and comes from the next archive.
    assert [(f.name, f.archive) for f in report.failures] == [("apps", newer.archive_key)]
    assert "gzip" in report.failures[0].error
    assert newer.archive_key in warnings[0]
    assert report.restored[0].archive == older.archive_key
    assert snapshot(mongo_uri, seeded, "apps") == before


def make_legacy_archive(archive: Path, out: Path, name: str, *, bson_first: bool = False) -> Path:
    """Re-pack a mongosnap archive's dump/ the way the legacy script did: tar -czf dump."""
    work = out / "legacy-work"
    work.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(work)], check=True)
    target = out / name
    if bson_first:  # member order is whatever readdir gave the old script
        members = sorted(
            (str(p.relative_to(work)) for p in (work / "dump").rglob("*") if p.is_file()),
            key=lambda m: (not m.endswith(".bson"), m),
        )
        with tarfile.open(target, "w:gz") as tar:
            for member in members:
                tar.add(work / member, arcname=member)
    else:
        subprocess.run(["tar", "-czf", str(target), "-C", str(work), "dump"], check=True)
    return target


@pytest.mark.parametrize("bson_first", [False, True])
async def test_heal_from_a_legacy_archive(
    mongo_uri: str, seeded: str, tmp_path: Path, bson_first: bool
) -> None:
    before = {n: snapshot(mongo_uri, seeded, n) for n in ("apps", "ring")}
    result = await backup(mongo_uri, tmp_path / "new", database=seeded)
    store = tmp_path / "legacy"
    store.mkdir()
    make_legacy_archive(
        tmp_path / "new" / result.archive_key,
        tmp_path,
        "2020-01-02-03-04-05-mongodb-dump.tar.gz",
        bson_first=bson_first,
    )
    (tmp_path / "2020-01-02-03-04-05-mongodb-dump.tar.gz").rename(
        store / "2020-01-02-03-04-05-mongodb-dump.tar.gz"
    )
    drop(mongo_uri, seeded, "apps", "ring")

    report = await heal(mongo_uri, store, database=seeded, collections=["apps", "ring", "users"])

    assert report.ok, report
    assert sorted(o.name for o in report.restored) == ["apps", "ring"]
    for name in ("apps", "ring"):
        assert snapshot(mongo_uri, seeded, name) == before[name], name


async def test_recreated_meanwhile_is_never_clobbered(
    mongo_uri: str, seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    drop(mongo_uri, seeded, "apps")
    real_finish = staging.StagedCollection.finish

    async def app_recreates_it(self: Any, *args: Any) -> None:
        await real_finish(self, *args)
        with MongoClient(mongo_uri) as client:  # the application writes meanwhile
            client[seeded].apps.insert_one({"written": "by the application"})

    monkeypatch.setattr(staging.StagedCollection, "finish", app_recreates_it)
    report = await heal(mongo_uri, tmp_path, database=seeded, collections=["apps"])

    assert [o.status for o in report.restored] == ["reappeared"]
    with MongoClient(mongo_uri) as client:
        docs = list(client[seeded].apps.find({}, {"_id": 0}))
    assert docs == [{"written": "by the application"}]
    assert not [c for c in collection_names(mongo_uri, seeded) if c.startswith(TEMP_PREFIX)]


async def test_dry_run_touches_nothing(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    drop(mongo_uri, seeded, "apps")
    report = await heal(mongo_uri, tmp_path, database=seeded, collections=["apps"], dry_run=True)
    assert [(o.name, o.status) for o in report.restored] == [("apps", "would restore")]
    assert "apps" not in collection_names(mongo_uri, seeded)


async def test_motor_client_as_target(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    before = snapshot(mongo_uri, seeded, "teams")
    drop(mongo_uri, seeded, "teams")
    client: Any = AsyncIOMotorClient(mongo_uri)
    try:
        report = await heal(client, tmp_path, database=seeded, collections=["teams"])
    finally:
        client.close()
    assert report.ok
    assert snapshot(mongo_uri, seeded, "teams") == before


def test_kill_9_during_heal_leaves_nothing_visible_and_a_rerun_heals(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    """A killed heal's lease stays until it expires: a rerun before then leaves
    its staging copy alone (it cannot tell it from a live one) and exits 15;
    a rerun after it takes the lease over, drops the copy and heals."""
    with MongoClient(mongo_uri) as client:
        coll = client[new_database].big
        for start in range(0, 12000, 1000):
            coll.insert_many(
                [{"n": n, "pad": os.urandom(2000)} for n in range(start, start + 1000)]
            )
    asyncio.run(backup(mongo_uri, tmp_path, database=new_database))
    before = snapshot(mongo_uri, new_database, "big")
    drop(mongo_uri, new_database, "big")
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    command = [sys.executable, "-m", "mongosnap", "heal", str(tmp_path), host, new_database, "big"]
    env = {**os.environ, "MONGOSNAP_LEASE_SECONDS": str(LEASE)}

    proc = subprocess.Popen([*command, "--workers", "1"], stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    with MongoClient(mongo_uri) as client:
        while True:
            staged = [
                c for c in client[new_database].list_collection_names() if c.startswith(TEMP_PREFIX)
            ]
            if staged and client[new_database][staged[0]].find_one({}, {"_id": 1}):
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "heal never started staging"
            time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait()
    assert "big" not in collection_names(mongo_uri, new_database)

    early = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert early.returncode == 15, early.stderr
    assert time.monotonic() - killed_at < LEASE / 2, "too slow to rerun within the lease"
    assert "being healed by another run" in early.stderr
    assert staged[0] in collection_names(mongo_uri, new_database)  # not dropped: maybe live

    time.sleep(max(0.0, killed_at + LEASE - time.monotonic()))
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "took over the expired lease" in rerun.stderr
    assert snapshot(mongo_uri, new_database, "big") == before
    left = collection_names(mongo_uri, new_database)
    assert not [c for c in left if c.startswith(TEMP_PREFIX) or c == LEASES]


def _line_within(stream: Any, seconds: float) -> str:
    """The next line of a subprocess's output, or a failure after ``seconds``."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    assert found and found[0], f"no output line within {seconds}s"
    return found[0].rstrip("\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_watch_mode_heals_each_cycle_and_stops_on_sigterm(
    mongo_uri: str, seeded: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGHUP (the terminal or ssh session went away) stops a watch as SIGTERM does."""
    asyncio.run(backup(mongo_uri, tmp_path, database=seeded))
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mongosnap",
            "heal",
            str(tmp_path),
            host,
            seeded,
            "teams",
            "--interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        # Each cycle prints one line: wait for a healthy cycle, then drop, then
        # wait for the cycle that restored it and one more; timing-independent.
        lines.append(_line_within(proc.stdout, 60))
        drop(mongo_uri, seeded, "teams")
        while not any("teams: restored" in line for line in lines):
            lines.append(_line_within(proc.stdout, 60))
        lines.append(_line_within(proc.stdout, 60))
    finally:
        proc.send_signal(sig)  # during the sleep between cycles
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines += out.splitlines()
    assert len(lines) >= 3
    assert "present" in lines[0]
    assert any("teams: restored" in line for line in lines)
    assert "teams" in collection_names(mongo_uri, seeded)
    assert "watch stopped" in err and "Traceback" not in err


def test_cli_exit_codes(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    host = mongo_uri.split("://", 1)[1].rstrip("/")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mongosnap", "heal", str(tmp_path), host, seeded, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    healthy = run("apps", "users")
    assert healthy.returncode == 0 and "present" in healthy.stdout
    drop(mongo_uri, seeded, "apps")
    none = run("apps")
    assert none.returncode == mongosnap.NoBackupsFound.exit_code
    assert none.stderr.strip() == f"mongosnap: error: no backups found in file://{tmp_path}"
    asyncio.run(backup(mongo_uri, tmp_path, database=seeded, include=["users"]))
    missing = run("apps", "users")
    assert missing.returncode == mongosnap.HealIncomplete.exit_code
    assert "apps" in missing.stderr and "Traceback" not in missing.stderr
    assert run("--help").returncode == 0


async def test_archive_whose_inner_manifest_differs_is_skipped(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    older = await backup(mongo_uri, tmp_path, database=seeded)
    newer = await backup(mongo_uri, tmp_path, database=seeded)
    manifest = Manifest.from_json((tmp_path / manifest_key(newer.archive_key)).read_bytes())
    path = tmp_path / newer.archive_key
    data = bytearray(path.read_bytes())
    inside = data.index(b'"tool_version"', manifest.manifest.offset)
    data[inside + 2] ^= 0x20  # "tool_version" -> "TOol_version", same length
    path.write_bytes(bytes(data))
    drop(mongo_uri, seeded, "users")

    report = await heal(mongo_uri, tmp_path, database=seeded, collections=["users"])

    assert [s.key for s in report.skipped] == [newer.archive_key]
    assert [o.archive for o in report.restored] == [older.archive_key]


class CountingStorage(MemoryStorage):
    """A real in-memory storage that counts sidecar reads."""

    def __init__(self) -> None:
        super().__init__("counting")
        self.sidecar_reads = 0

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if key.endswith(".manifest.json"):
            self.sidecar_reads += 1
        return super().read(key, start, end)


async def test_heal_reads_only_the_sidecars_it_needs(mongo_uri: str, seeded: str) -> None:
    storage = CountingStorage()
    for _ in range(5):
        await backup(mongo_uri, storage, database=seeded, include=["teams"])
    drop(mongo_uri, seeded, "teams")
    storage.sidecar_reads = 0

    report = await heal(mongo_uri, storage, database=seeded, collections=["teams"])

    assert report.ok and len(report.searched) == 1
    assert storage.sidecar_reads == 1


async def test_legacy_index_options_are_converted(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    """An old mongodump's metadata: float and string key values, ns, unknown options."""
    documents = b"".join(server_documents(mongo_uri, seeded, "teams"))
    metadata = json.dumps(
        {
            "options": {},
            "indexes": [
                {"v": 1, "key": {"_id": 1}, "name": "_id_", "ns": f"{seeded}.teams"},
                {
                    "v": 1,
                    "key": {"i": 1.0},
                    "name": "i_1",
                    "ns": f"{seeded}.teams",
                    "background": True,
                    "safe": None,
                },
                {"v": 1, "key": {"s": "1", "when": -1.0}, "name": "s_when", "unique": True},
            ],
        }
    ).encode()
    store = tmp_path / "legacy"
    store.mkdir()
    with tarfile.open(store / "2019-05-06-07-08-09-mongodb-dump.tar.gz", "w:gz") as tar:
        for name, data in (
            (f"dump/{seeded}/teams.bson", documents),
            (f"dump/{seeded}/teams.metadata.json", metadata),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    drop(mongo_uri, seeded, "teams")

    report = await heal(mongo_uri, store, database=seeded, collections=["teams"])

    assert report.ok, report
    with MongoClient(mongo_uri) as client:
        indexes = {ix["name"]: ix for ix in client[seeded].teams.list_indexes()}
    assert dict(indexes["i_1"]["key"]) == {"i": 1}
    assert dict(indexes["s_when"]["key"]) == {"s": 1, "when": -1}
    assert indexes["s_when"].get("unique") is True
    assert sorted(server_documents(mongo_uri, seeded, "teams")) == sorted(split_bson(documents))


async def test_heal_commands(mongo_uri: str, seeded: str, tmp_path: Path) -> None:
    """One listCollections for the whole heal (the vanished check serves the
    engine too), then create, insert, indexes and rename for the collection;
    around them its lease (hello for the server's time, insert, delete, then
    a find and a drop of the emptied lease collection; not renewed before the
    rename, as it was taken less than a third of a lease ago) and the staging
    copy's UUID, read after the
    create and checked before the rename; one count of each present watched
    collection (an emptied one is damaged)."""
    await backup(mongo_uri, tmp_path, database=seeded)
    before = snapshot(mongo_uri, seeded, "apps")
    drop(mongo_uri, seeded, "apps")
    commands = CommandLog()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, event_listeners=[commands])
    try:
        report = await heal(client, tmp_path, database=seeded, collections=["apps", "users"])
    finally:
        await client.close()
    assert [o.name for o in report.restored] == ["apps"] and report.ok
    assert commands.sent() == {
        "ping": 1,
        "listCollections": 3,
        "aggregate": 1,
        "create": 1,
        "insert": 2,
        "createIndexes": 1,
        "renameCollection": 1,
        "hello": 1,
        "delete": 1,
        "find": 1,
        "drop": 1,
    }
    assert snapshot(mongo_uri, seeded, "apps") == before


def test_heal_from_a_directory_loads_no_oplog_or_s3_code(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    """Heal's fixed cost is mostly imports: an archive without an oplog window
    needs neither the oplog replay modules nor, from a directory, the S3 stack,
    nor without --metrics-file the Prometheus client."""
    asyncio.run(backup(mongo_uri, tmp_path, database=seeded))
    before = snapshot(mongo_uri, seeded, "teams")
    drop(mongo_uri, seeded, "teams")
    argv = ["heal", str(tmp_path), "--uri", mongo_uri, seeded, "teams", "-q"]
    code = (
        "import sys\n"
        "from mongosnap.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('mongosnap.oplog', 'mongosnap.pipelines.pitr', 'aiobotocore', 'aiohttp',"
        " 'prometheus_client')\n"
        "print(sorted({m for m in sys.modules if m.startswith(heavy)}), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"
    assert snapshot(mongo_uri, seeded, "teams") == before
