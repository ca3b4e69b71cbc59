"""drill: restore the newest archive into a scratch database, check it, drop it.

Checked on the real server: what the drill reports for each collection is
recomputed here from the live collections it was backed up from (count,
size, the order-independent SHA-256), the scratch database is gone
afterwards, and the drill record is where check finds it and where list and
prune never look.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import run_cli, server_documents
from pymongo import MongoClient

from mongosnap import backup, drill
from mongosnap.pipelines import drills

EXIT_DRILL_FAILED = 45  # docs/cli.md


def _host(uri: str) -> str:
    return uri.split("//")[1].rstrip("/")


def _seed(uri: str, database: str) -> None:
    with MongoClient(uri) as client:
        db = client[database]
        db.users.insert_many([{"_id": i, "name": f"user {i}", "n": i % 7} for i in range(300)])
        db.users.create_index("n", name="by_n")
        db.events.insert_many([{"e": "x" * i} for i in range(40)])


def _digest(uri: str, database: str, name: str) -> tuple[int, int, str]:
    """(count, bytes, SHA-256 of the sorted per-document SHA-256s), docs/cli.md's definition."""
    docs = server_documents(uri, database, name)
    outer = hashlib.sha256(b"".join(sorted(hashlib.sha256(d).digest() for d in docs)))
    return len(docs), sum(map(len, docs)), outer.hexdigest()


def _scratch_left(uri: str, database: str) -> list[str]:
    with MongoClient(uri) as client:
        return [n for n in client.list_database_names() if n.startswith(f"{database}__drill_")]


async def test_a_drill_checks_every_collection_and_leaves_nothing(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _seed(mongo_uri, new_database)
    store = tmp_path / "store"
    result = await backup(mongo_uri, store, database=new_database)

    report = await drill(mongo_uri, store, database=new_database)

    assert report.ok, report.failures
    assert report.archive_key == result.archive_key
    assert report.scratch_database.startswith(f"{new_database}__drill_")
    for check in report.collections:
        assert (check.documents, check.bytes, check.sha256) == _digest(
            mongo_uri, new_database, check.name
        )
    assert sorted(c.name for c in report.collections) == ["events", "users"]
    assert report.rpo_seconds >= 0 and report.rto_seconds > 0
    assert _scratch_left(mongo_uri, new_database) == []
    assert report.record_key is not None
    record = json.loads((store / report.record_key).read_text())
    assert record["ok"] is True and record["archive"] == result.archive_key


def test_cli_drill_json_metrics_check_and_list(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _seed(mongo_uri, new_database)
    store = tmp_path / "store"
    asyncio.run(backup(mongo_uri, store, database=new_database))
    check = ["check", str(store), new_database, "--max-drill-age", "8d", "--json"]
    before = run_cli(*check)
    assert before.returncode == 2, before.stdout  # CRITICAL: no drill yet
    assert "no restore drill passed" in json.loads(before.stdout)["message"]

    metrics = tmp_path / "drill.prom"
    args = ["drill", str(store), _host(mongo_uri), new_database, "--json"]
    done = run_cli(*args, "--metrics-file", str(metrics))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["failures"] == []
    assert {c["name"] for c in report["collections"]} == {"users", "events"}
    text = metrics.read_text()
    for name in ("drill_last_success_timestamp_seconds", "drill_duration_seconds"):
        assert f'mongosnap_{name}{{command="drill"}}' in text
    assert f'mongosnap_drill_rpo_seconds{{command="drill"}} {report["rpo_seconds"]}' in text

    after = run_cli(*check)
    assert after.returncode == 0, after.stdout
    assert json.loads(after.stdout)["drill"]["record"] == report["record_key"]

    # list and prune see only archives, never the record under drills/
    listed = run_cli("list", str(store), "--json")
    assert [a["key"] for a in json.loads(listed.stdout)] == [report["archive_key"]]
    pruned = run_cli("prune", str(store), "--keep-last", "1", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert [a["key"] for a in json.loads(pruned.stdout)["archives"]] == [report["archive_key"]]
    assert (store / report["record_key"]).exists()


def test_a_corrupt_archive_fails_the_drill_with_45(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    """The failed drill is reported, recorded, counted, and check stays red."""
    _seed(mongo_uri, new_database)
    store = tmp_path / "store"
    result = asyncio.run(backup(mongo_uri, store, database=new_database))
    manifest = json.loads((store / result.manifest_key).read_text())
    users = next(c for c in manifest["collections"] if c["name"] == "users")
    archive = store / result.archive_key
    data = bytearray(archive.read_bytes())
    middle = (users["bson"]["offset"] + users["bson"]["end"]) // 2
    data[middle] ^= 0xFF
    archive.write_bytes(bytes(data))
    metrics = tmp_path / "drill.prom"

    done = run_cli(
        "drill",
        str(store),
        _host(mongo_uri),
        new_database,
        "--json",
        "--metrics-file",
        str(metrics),
    )

    assert done.returncode == EXIT_DRILL_FAILED, done.stderr
    report = json.loads(done.stdout.splitlines()[0])
    assert report["ok"] is False
    assert [f.split(":")[0] for f in report["failures"]] == ["users"]
    assert json.loads(done.stdout.splitlines()[1])["error"]["type"] == "DrillFailed"
    assert _scratch_left(mongo_uri, new_database) == []
    assert 'mongosnap_failures_total{command="drill",kind="DrillFailed"} 1.0' in metrics.read_text()
    assert "mongosnap_drill_last_success_timestamp_seconds{" not in metrics.read_text()
    record = json.loads((store / report["record_key"]).read_text())
    assert record["ok"] is False
    check = run_cli("check", str(store), new_database, "--max-drill-age", "8d")
    assert check.returncode == 2 and "newest drill failed" in check.stdout


def test_drift_against_live_is_reported_not_failed(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _seed(mongo_uri, new_database)
    store = tmp_path / "store"
    asyncio.run(backup(mongo_uri, store, database=new_database))
    with MongoClient(mongo_uri) as client:
        client[new_database].users.delete_one({"_id": 5})

    report = asyncio.run(drill(mongo_uri, store, database=new_database, compare_live=True))

    assert report.ok
    assert report.drift is not None
    assert [
        (d["name"], d["deleted"], d["a_documents"], d["b_documents"]) for d in report.drift
    ] == [("users", 1, 300, 299)]


def _leftover(uri: str, name: str, expires: datetime) -> None:
    """What a drill killed with SIGKILL leaves: its scratch database and lease."""
    with MongoClient(uri) as client:
        db = client[name]
        db.users.insert_one({"_id": 1})
        db.mongosnap_leases.insert_one(
            {"_id": "mongosnap_drill", "owner": "x", "holder": "h:1", "expires": expires}
        )


def test_a_killed_drills_scratch_database_is_dropped_by_the_next(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _seed(mongo_uri, new_database)
    store = tmp_path / "store"
    asyncio.run(backup(mongo_uri, store, database=new_database))
    now = datetime.now(UTC)
    stale = f"{new_database}__drill_20200101T000000"
    running = f"{new_database}__drill_20200101T000001"
    _leftover(mongo_uri, stale, now - timedelta(minutes=5))
    _leftover(mongo_uri, running, now + timedelta(hours=1))
    try:
        report = asyncio.run(drill(mongo_uri, store, database=new_database))
        assert report.ok
        assert _scratch_left(mongo_uri, new_database) == [running]  # a live drill's is kept
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(running)
            client.drop_database(stale)


def test_an_existing_database_is_never_taken_as_scratch(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _seed(mongo_uri, new_database)
    store = tmp_path / "store"
    asyncio.run(backup(mongo_uri, store, database=new_database))
    other = f"{new_database}_other"
    with MongoClient(mongo_uri) as client:
        client[other].data.insert_one({"_id": "precious"})
    try:
        args = ["drill", str(store), _host(mongo_uri), new_database, "--scratch-db"]
        taken = run_cli(*args, other)
        same = run_cli(*args, new_database)
        with MongoClient(mongo_uri) as client:
            assert list(client[other].data.find()) == [{"_id": "precious"}]
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(other)
    assert taken.returncode == 14, taken.stderr  # CollectionExists
    assert same.returncode == 2, same.stderr


async def test_records_are_found_newest_first(tmp_path: Path) -> None:
    from mongosnap.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    base = datetime(2026, 12, 1, tzinfo=UTC)
    for day, ok in ((1, True), (2, False), (3, False)):
        when = base + timedelta(days=day)
        stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {
            **dict(database="db", archive_key=f"a{day}", ok=ok, started=stamp, finished=stamp),
            **dict(rto_seconds=1.0, rpo_seconds=2.0, failures=[] if ok else ["x: y"]),
        }
        await drills.write(storage, record)
    passed, latest = await drills.newest_passed(storage, "db", base)
    assert passed is not None and passed.archive == "a1"
    assert latest is not None and latest.archive == "a3" and not latest.ok
    passed, latest = await drills.newest_passed(storage, "db", base + timedelta(days=2))
    assert passed is None and latest is not None and latest.archive == "a3"
