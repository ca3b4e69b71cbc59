"""diff: two archives with known changes, and an archive against the live database.

Side A holds ``docs`` (_id 0..99), ``keep`` and ``gone``; between the two
backups ``docs`` gets two inserts, three deletes, one update and an index,
``gone`` is dropped and ``new`` created. The report must name exactly these.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import bson
import bson.json_util
import pytest
from bson import Int64, ObjectId
from helpers import run_cli
from pymongo import MongoClient

from mongosnap import backup, diff
from mongosnap.pipelines.contents import document, id_key
from mongosnap.pipelines.diff import RANGES, differing_ranges

INSERTED = [1000, 1001]
DELETED = [10, 11, 50]
UPDATED = [70]


@pytest.fixture(scope="module")
def archives(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    database = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    store = tmp_path_factory.mktemp("diff") / "store"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    db = client[database]
    db.docs.insert_many([{"_id": i, "v": f"value {i}"} for i in range(100)])
    db.keep.insert_many([{"k": i} for i in range(20)])
    db.gone.insert_many([{"g": i} for i in range(5)])
    first = asyncio.run(backup(mongo_uri, store, database=database)).archive_key
    db.docs.insert_many([{"_id": i, "v": "new"} for i in INSERTED])
    db.docs.delete_many({"_id": {"$in": DELETED}})
    db.docs.update_one({"_id": UPDATED[0]}, {"$set": {"v": "changed"}})
    db.docs.create_index("v", name="by_v")
    db.drop_collection("gone")
    db.new.insert_one({"n": 1})
    second = asyncio.run(backup(mongo_uri, store, database=database)).archive_key
    assert first != second
    yield {"database": database, "store": store, "a": first, "b": second}
    client.drop_database(database)
    client.close()


def _expected_ranges() -> list[tuple[str | None, str | None]]:
    """Side A's 100 _ids in buckets of ceil(100/64) = 2: each change falls in its pair's bucket."""
    step = -(-100 // RANGES)
    starts = sorted({(i // step) * step for i in DELETED + UPDATED} | {100 - step})
    return [
        (None if s == 0 else str(s), None if s + step >= 100 else str(s + step)) for s in starts
    ]


async def test_two_archives_differ_by_exactly_the_changes(archives: dict[str, Any]) -> None:
    report = await diff(
        archives["store"], archives["a"], archives["b"], database=archives["database"]
    )

    assert not report.same
    states = {c.name: c.state for c in report.collections}
    assert states == {"docs": "changed", "keep": "same", "gone": "removed", "new": "added"}
    docs = next(c for c in report.collections if c.name == "docs")
    assert (docs.a_documents, docs.b_documents) == (100, 99)
    assert (docs.inserted, docs.deleted, docs.updated) == (2, 3, 1)
    assert docs.examples == {
        "inserted": sorted(str(i) for i in INSERTED),
        "deleted": sorted(str(i) for i in DELETED),
        "updated": [str(i) for i in UPDATED],
    }
    assert (docs.indexes_added, docs.indexes_removed, docs.indexes_changed) == (["by_v"], [], [])
    assert not docs.options_changed
    assert [(r.first, r.before) for r in docs.ranges] == _expected_ranges()
    gone = next(c for c in report.collections if c.name == "gone")
    assert (gone.a_documents, gone.b_documents) == (5, None)


async def test_an_archive_against_itself_is_the_same(archives: dict[str, Any]) -> None:
    report = await diff(
        archives["store"], archives["a"], archives["a"], database=archives["database"]
    )
    assert report.same and all(c.state == "same" for c in report.collections)
    assert {c.name for c in report.collections} == {"docs", "keep", "gone"}


def test_cli_diff_of_two_archives_exits_46_with_one_json_line(archives: dict[str, Any]) -> None:
    before = sorted(p.name for p in Path(archives["store"]).iterdir())
    done = run_cli(
        "diff", str(archives["store"]), archives["database"], archives["a"], "latest", "--json"
    )
    assert done.returncode == 46, done.stderr
    lines = done.stdout.splitlines()
    report, error = json.loads(lines[0]), json.loads(lines[1])
    assert report["b"] == archives["b"] and report["same"] is False
    assert [c["name"] for c in report["collections"] if c["state"] != "same"] == [
        "docs",
        "gone",
        "new",
    ]
    assert error["error"]["type"] == "Differs"
    assert sorted(p.name for p in Path(archives["store"]).iterdir()) == before  # wrote nothing


def test_cli_diff_archive_against_live(mongo_uri: str, archives: dict[str, Any]) -> None:
    host = mongo_uri.split("//")[1].rstrip("/")
    same = run_cli(
        "diff", str(archives["store"]), host, archives["database"], archives["b"], "live"
    )
    assert same.returncode == 0, same.stderr
    assert "hold the same" in same.stdout

    differs = run_cli(
        "diff", str(archives["store"]), host, archives["database"], archives["a"], "live", "--json"
    )
    assert differs.returncode == 46, differs.stderr
    report = json.loads(differs.stdout.splitlines()[0])
    docs = next(c for c in report["collections"] if c["name"] == "docs")
    assert (docs["inserted"], docs["deleted"], docs["updated"]) == (2, 3, 1)
    assert [(r["first"], r["before"]) for r in docs["ranges"]] == _expected_ranges()
    with MongoClient(mongo_uri) as client:  # read only: nothing created on the server
        assert sorted(client[archives["database"]].list_collection_names()) == [
            "docs",
            "keep",
            "new",
        ]


def test_live_without_a_server_is_a_usage_error(archives: dict[str, Any]) -> None:
    done = run_cli("diff", str(archives["store"]), archives["database"], "latest", "live")
    assert done.returncode == 2, done.stderr
    assert "needs the server" in done.stderr


@pytest.mark.parametrize(
    "value",
    [
        1,
        -5,
        Int64(2**40),
        2.5,
        "héllo",
        "",
        ObjectId(),
        True,
        datetime(2020, 1, 1),
        {"a": 1},
        b"\x01",
    ],
    ids=repr,
)
def test_an_id_read_from_the_bytes_equals_the_decoded_one(value: Any) -> None:
    """The fast path for common _id types gives what a full decode gives."""
    raw = bson.encode({"_id": value, "x": 1})
    doc = document(raw)
    decoded = bson.decode(raw)["_id"]
    assert bson.encode({"_id": doc.value}) == bson.encode({"_id": decoded})
    assert doc.key == id_key(decoded)
    assert json.loads(doc.label) == json.loads(bson.json_util.dumps(decoded))


def test_ranges_cut_side_a_and_place_side_b_by_id() -> None:
    a = sorted((document(bson.encode({"_id": i})) for i in range(10)), key=lambda d: d.key)
    b = sorted(
        (document(bson.encode({"_id": i})) for i in [*range(10), -1, 100] if i != 4),
        key=lambda d: d.key,
    )
    ranges = differing_ranges(a, b, buckets=5)  # buckets of 2: [..2) [2,4) [4,6) [6,8) [8..
    assert [(r.first, r.before, r.a_documents, r.b_documents) for r in ranges] == [
        (None, "2", 2, 3),
        ("4", "6", 2, 1),
        ("8", None, 2, 3),
    ]
