"""Restore and heal report progress per collection, ending at the manifest's totals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import Destination, seed, server_documents
from pymongo import MongoClient

from mongosnap import Progress, Stage, backup, heal, list_archives, open_storage, restore
from mongosnap.archive.manifest import CollectionEntry

SIZES = {"apps": 2100, "users": 50, "empty": 0}
"""apps spans several insert batches (staging.BATCH_DOCUMENTS is 1000)."""


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    return new_database


@pytest.fixture
def other_database(mongo_uri: str, seeded: str) -> str:
    name = f"{seeded}_copy"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


async def manifest_entries(destination: Destination) -> dict[str, CollectionEntry]:
    storage = open_storage(destination.url, s3=destination.s3)
    try:
        [info] = await list_archives(storage)
    finally:
        await storage.aclose()
    assert info.manifest is not None
    return {e.name: e for e in info.manifest.collections}


def by_collection(events: list[Progress]) -> dict[str, list[Progress]]:
    found: dict[str, list[Progress]] = {}
    for event in events:
        found.setdefault(event.collection, []).append(event)
    return found


def assert_complete_run(events: list[Progress], database: str, entry: CollectionEntry) -> None:
    """STARTED with the totals, BATCH counts rising, DONE at exactly the totals."""
    assert [e.stage for e in events[:1]] == [Stage.STARTED]
    assert events[-1].stage is Stage.DONE
    assert all(e.stage is Stage.BATCH for e in events[1:-1])
    assert {e.database for e in events} == {database}
    for event in events:
        assert (event.total_documents, event.total_bytes) == (entry.documents, entry.bson_bytes)
    counts = [(e.documents, e.bytes) for e in events]
    assert counts == sorted(counts)
    batches = counts[1:-1]
    assert len(set(batches)) == len(batches)  # each batch adds something
    assert counts[-1] == (entry.documents, entry.bson_bytes)
    assert counts[0] == (0, 0)


async def test_restore_reports_each_collection_up_to_its_totals(
    destination: Destination, mongo_uri: str, seeded: str, other_database: str
) -> None:
    await backup(mongo_uri, destination.url, database=seeded, s3=destination.s3)
    entries = await manifest_entries(destination)
    events: list[Progress] = []

    await restore(
        mongo_uri,
        destination.url,
        database=seeded,
        to_database=other_database,
        s3=destination.s3,
        progress=events.append,
    )

    runs = by_collection(events)
    assert sorted(runs) == sorted(SIZES)
    for name, run in runs.items():
        assert_complete_run(run, other_database, entries[name])
    assert len([e for e in runs["apps"] if e.stage is Stage.BATCH]) >= 3
    assert [e.stage for e in runs["empty"]] == [Stage.STARTED, Stage.DONE]
    for name in SIZES:
        assert sorted(server_documents(mongo_uri, other_database, name)) == sorted(
            server_documents(mongo_uri, seeded, name)
        )


async def test_heal_reports_only_what_it_restores(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    before = sorted(server_documents(mongo_uri, seeded, "apps"))
    await backup(mongo_uri, destination.url, database=seeded, s3=destination.s3)
    entries = await manifest_entries(destination)
    with MongoClient(mongo_uri) as client:
        client[seeded].drop_collection("apps")
    events: list[Progress] = []

    report = await heal(
        mongo_uri,
        destination.url,
        database=seeded,
        collections=list(SIZES),
        s3=destination.s3,
        progress=events.append,
    )

    assert report.ok
    assert list(by_collection(events)) == ["apps"]
    assert_complete_run(events, seeded, entries["apps"])
    assert sorted(server_documents(mongo_uri, seeded, "apps")) == before


async def test_a_dry_run_heal_reports_no_progress(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    await backup(mongo_uri, tmp_path, database=seeded)
    with MongoClient(mongo_uri) as client:
        client[seeded].drop_collection("users")
    events: list[Progress] = []
    report = await heal(
        mongo_uri,
        tmp_path,
        database=seeded,
        collections=["users"],
        dry_run=True,
        progress=events.append,
    )
    assert [o.name for o in report.restored] == ["users"] and events == []


async def test_a_collection_that_fails_ends_with_failed(
    mongo_uri: str, seeded: str, other_database: str, tmp_path: Path
) -> None:
    """A collection whose bytes differ from the manifest ends FAILED, never DONE."""
    result = await backup(mongo_uri, tmp_path, database=seeded)
    archive = tmp_path / result.archive_key
    sidecar = json.loads((tmp_path / f"{result.archive_key}.manifest.json").read_text())
    entry = next(e for e in sidecar["collections"] if e["name"] == "users")
    data = bytearray(archive.read_bytes())
    data[(entry["bson"]["offset"] + entry["bson"]["end"]) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    events: list[Progress] = []

    outcome = await restore(
        mongo_uri, tmp_path, database=seeded, to_database=other_database, progress=events.append
    )

    statuses = {c.name: c.status for c in outcome.collections}
    assert statuses == {"apps": "restored", "users": "failed", "empty": "restored"}
    runs = by_collection(events)
    assert runs["users"][0].stage is Stage.STARTED
    assert runs["users"][-1].stage is Stage.FAILED
    assert Stage.DONE not in {e.stage for e in runs["users"]}
    assert runs["apps"][-1].stage is Stage.DONE
