"""Several databases in one place, and retention that never deletes on a guess.

Heal's depth and prune's rules count only archives that hold the database in
question; an archive whose state cannot be told (a sidecar read that fails or
answers garbage) is kept and reported. Real backups from FerretDB into a
directory and S3 (moto, versitygw), faults injected on top of real reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from catalog_support import at, backup_at, clock, get, repack_legacy
from helpers import Destination, make_destination, run_cli, seed, server_documents
from pymongo import MongoClient
from storage.s3_faults import FaultyClient

import mongosnap
from mongosnap import LocalStorage, MemoryStorage, heal, list_archives, prune
from mongosnap._errors import StorageError
from mongosnap.archive.manifest import manifest_key
from mongosnap.catalog import (
    ArchiveInfo,
    ArchiveStatus,
    SidecarState,
    learn_databases,
    newest_archives,
    resolve,
)
from mongosnap.pipelines.prune import plan
from mongosnap.storage import S3Storage, Storage

NO_GRACE = timedelta(0)


@pytest.fixture
def two_databases(mongo_uri: str, new_database: str) -> Iterator[tuple[str, str]]:
    other = new_database + "_b"
    seed(mongo_uri, new_database, {"users": 50, "teams": 20})
    seed(mongo_uri, other, {"events": 30})
    yield new_database, other
    with MongoClient(mongo_uri) as client:
        client.drop_database(other)


async def backup_of(when: datetime, uri: str, place: Destination, databases: list[str]) -> str:
    with clock(when):
        result = await mongosnap.backup(uri, place.url, database=databases, s3=place.s3)
    return result.archive_key


async def put_legacy(storage: Storage, source_key: str, name: str, work: Path) -> str:
    """A ``tar -czf`` re-pack of an archive, stored under a legacy name."""
    await storage.put(name, repack_legacy(await get(storage, source_key), work))
    return name


# ------------------------------------------------------------ heal's depth


@pytest.mark.parametrize("kind", ["local", "versitygw"])
async def test_heal_depth_counts_only_archives_of_the_watched_database(
    kind: str,
    tmp_path: Path,
    testbed: Any,
    new_bucket: Any,
    mongo_uri: str,
    two_databases: tuple[str, str],
) -> None:
    mine, other = two_databases
    place = make_destination(kind, tmp_path, testbed, new_bucket)
    teams = sorted(server_documents(mongo_uri, mine, "teams"))
    wanted = await backup_of(at(1), mongo_uri, place, [mine])
    newer = [await backup_of(at(day), mongo_uri, place, [other]) for day in (2, 3)]
    storage = place.storage()
    try:  # and a legacy archive of the other database, newest of all
        legacy = "2025-01-09-03-00-00-mongodb-dump.tar.gz"
        await put_legacy(storage, newer[0], legacy, tmp_path / "legacy")
        holding = [i.key async for i in newest_archives(storage, database=mine)]
        assert holding == [wanted]
        assert [i.key async for i in newest_archives(storage, database=other)] == [
            legacy,
            *reversed(newer),
        ]
    finally:
        await storage.aclose()
    with MongoClient(mongo_uri) as client:
        client[mine].drop_collection("teams")

    report = await heal(mongo_uri, place.url, database=mine, collections=["teams"], s3=place.s3)

    assert report.ok and report.searched == [wanted] and report.skipped == []
    assert sorted(server_documents(mongo_uri, mine, "teams")) == teams


# ------------------------------------------------------------ per-database rules


@pytest.mark.parametrize("kind", ["local", "moto"])
async def test_retention_applies_per_database(
    kind: str,
    tmp_path: Path,
    testbed: Any,
    new_bucket: Any,
    mongo_uri: str,
    two_databases: tuple[str, str],
) -> None:
    a, b = two_databases
    place = make_destination(kind, tmp_path, testbed, new_bucket)
    b_first = await backup_of(at(2), mongo_uri, place, [b])
    storage = place.storage()
    try:
        legacy_b = await put_legacy(
            storage, b_first, "2025-01-01-03-00-00-mongodb-dump.tar.gz", tmp_path / "legacy"
        )
        b_only = await backup_of(at(3), mongo_uri, place, [b])
        a_made = [await backup_of(at(day), mongo_uri, place, [a]) for day in (4, 5, 6)]

        report = await prune(storage, keep_last=1)

        decisions = {d.archive.key: d for d in report.decisions}
        assert {d.archive.key for d in report.decisions if d.keep} == {a_made[2], b_only}
        assert decisions[b_only].kept_for == (b,)
        assert decisions[b_only].reasons == ("keep-last", "newest complete")
        assert decisions[legacy_b].archive.databases == frozenset({b})  # learned by reading it
        assert not decisions[legacy_b].keep
        assert {a.key for a in await list_archives(storage)} == {a_made[2], b_only}

        both = await backup_of(at(7), mongo_uri, place, [a, b])
        second = await prune(storage, keep_last=1)
        assert [a.key for a in second.kept] == [both]  # one archive holding both is each's copy
        assert second.decisions[0].kept_for == tuple(sorted([a, b]))
        assert second.to_dict()["archives"][0]["databases"] == sorted([a, b])
    finally:
        await storage.aclose()


def _info(key: str, day: int, *databases: str) -> ArchiveInfo:
    when = datetime(2025, 3, day, 3, tzinfo=UTC)
    return ArchiveInfo(
        key,
        100,
        when,
        "gzip",
        ArchiveStatus.COMPLETE,
        None,
        modified=when,
        sidecar=SidecarState.MATCHES,
        databases=frozenset(databases),
    )


def test_keep_within_and_keep_daily_count_from_each_database() -> None:
    """A database whose backups stopped keeps its own window and days."""
    listing = [_info(f"a{d}", d, "a") for d in range(10, 21)]
    listing += [_info(f"b{d}", d, "b") for d in (1, 2, 3, 5)]
    now = datetime(2025, 4, 1, tzinfo=UTC)

    within = [d.archive.key for d in plan(listing, None, timedelta(days=1), None, now) if d.keep]
    assert within == ["a20", "a19", "b5"]
    daily = [d.archive.key for d in plan(listing, None, None, 2, now) if d.keep]
    assert daily == ["a20", "a19", "b5", "b3"]


# ------------------------------------------------------------ never on a guess


def _is_sidecar_of(key: str) -> Any:
    return lambda name: name.endswith(manifest_key(key))


@pytest.mark.parametrize("kind", ["moto", "versitygw"])
async def test_a_garbled_sidecar_read_keeps_the_archive_on_s3(
    kind: str, tmp_path: Path, testbed: Any, new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 40})
    place = make_destination(kind, tmp_path, testbed, new_bucket)
    made = [await backup_at(at(day), mongo_uri, place, new_database) for day in (1, 2, 3)]
    storage = place.storage()
    assert isinstance(storage, S3Storage)
    try:
        faulty = await FaultyClient.install(storage, garble_reads=_is_sidecar_of(made[1]))
        report = await prune(storage, keep_last=1, incomplete_grace=NO_GRACE)
        assert "get_object garbled" in faulty.calls

        decisions = {d.archive.key: d for d in report.decisions}
        assert decisions[made[1]].keep and decisions[made[1]].unknown
        assert decisions[made[1]].archive.sidecar is SidecarState.UNPARSABLE
        assert [d.archive.key for d in report.unknown] == [made[1]]
        assert report.to_dict()["unknown"] == 1
        assert [a.key for a in report.deleted] == [made[0]]

        faulty.fail_reads, faulty.garble_reads = _is_sidecar_of(made[1]), None
        failing = await prune(storage, keep_last=1, incomplete_grace=NO_GRACE)
        assert "get_object failed" in faulty.calls
        assert failing.deleted == [] and [d.archive.key for d in failing.unknown] == [made[1]]
        assert failing.unknown[0].archive.sidecar is SidecarState.UNREADABLE
    finally:
        await storage.aclose()
    fresh = place.storage()
    try:  # the archive kept is whole and, read properly, complete
        statuses = {a.key: a.status for a in await list_archives(fresh)}
        assert statuses == {made[2]: ArchiveStatus.COMPLETE, made[1]: ArchiveStatus.COMPLETE}
    finally:
        await fresh.aclose()


class FlakyLocal(LocalStorage):
    """A directory whose sidecar reads answer garbage, or fail, for chosen keys."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.garbled: set[str] = set()
        self.failing: set[str] = set()

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if key in self.failing:
            raise StorageError(f"{key}: injected read failure")
        async for chunk in super().read(key, start, end):
            yield bytes(b ^ 0x5A for b in chunk) if key in self.garbled else chunk


async def test_sidecar_states_are_told_apart_and_only_known_ones_deleted(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 40})
    storage = FlakyLocal(tmp_path / "backups")
    made = [await backup_at(at(day), mongo_uri, storage, new_database) for day in range(1, 7)]
    absent, mismatch, garbled, failing, _, newest = made
    await storage.delete(manifest_key(absent))
    other_sidecar = await get(storage, manifest_key(newest))
    await storage.delete(manifest_key(mismatch))
    await storage.put(manifest_key(mismatch), other_sidecar)
    storage.garbled.add(manifest_key(garbled))
    storage.failing.add(manifest_key(failing))

    states = {a.key: a.sidecar for a in await list_archives(storage)}
    assert states == {
        absent: SidecarState.ABSENT,
        mismatch: SidecarState.MISMATCH,
        garbled: SidecarState.UNPARSABLE,
        failing: SidecarState.UNREADABLE,
        made[4]: SidecarState.MATCHES,
        newest: SidecarState.MATCHES,
    }
    report = await prune(storage, keep_last=2, incomplete_grace=NO_GRACE)
    assert {a.key for a in report.deleted} == {absent, mismatch}
    assert {d.archive.key for d in report.unknown} == {garbled, failing}
    assert all(d.keep for d in report.unknown)
    left = sorted(p.name for p in (tmp_path / "backups").iterdir())
    assert garbled in left and manifest_key(garbled) in left
    assert failing in left and manifest_key(failing) in left
    assert absent not in left and mismatch not in left


async def test_latest_is_not_guessed_past_an_unreadable_sidecar(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 10})
    storage = FlakyLocal(tmp_path / "backups")
    older, newest = [await backup_at(at(day), mongo_uri, storage, new_database) for day in (1, 2)]
    storage.failing.add(manifest_key(newest))
    with pytest.raises(StorageError, match="cannot tell whether"):
        await resolve(storage, "latest")
    storage.failing.clear()
    storage.garbled.add(manifest_key(newest))  # a sidecar that does not parse: passed over
    assert (await resolve(storage, "latest")).key == older


async def test_a_damaged_legacy_archive_is_kept_and_reported(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 10})
    storage = MemoryStorage()
    made = [await backup_at(at(day), mongo_uri, storage, new_database) for day in (2, 3)]
    legacy = repack_legacy(await get(storage, made[0]), tmp_path)
    damaged = "2025-01-01-03-00-00-mongodb-dump.tar.gz"
    await storage.put(damaged, legacy[: len(legacy) // 2])

    [learned] = [
        a for a in await learn_databases(storage, await list_archives(storage)) if a.key == damaged
    ]
    assert learned.databases is None and "cannot tell which databases" in learned.problem
    report = await prune(storage, keep_last=1)
    assert [d.archive.key for d in report.unknown] == [damaged]
    assert [a.key for a in report.deleted] == [made[0]]


def test_prune_cli_reports_what_it_keeps_for_want_of_knowing(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 10})
    root = tmp_path / "backups"
    storage = LocalStorage(root)
    made = [asyncio.run(backup_at(at(day), mongo_uri, storage, new_database)) for day in (1, 2, 3)]
    (root / manifest_key(made[1])).write_bytes(b"\x8b\x1f garbage, not JSON")

    text = run_cli("prune", str(root), "--keep-last", "1")
    as_json = run_cli("prune", str(root), "--keep-last", "1", "--json", "--dry-run")

    assert text.returncode == 0, text.stderr
    assert f"mongosnap: warning: kept {made[1]}: sidecar manifest is unusable" in text.stderr
    assert (root / made[1]).exists() and not (root / made[0]).exists()
    report = json.loads(as_json.stdout)
    assert report["unknown"] == 1 and report["deleted"] == 0
    [entry] = [a for a in report["archives"] if a["key"] == made[1]]
    assert entry["keep"] and entry["sidecar"] == "unparsable" and entry["unknown"]
    assert made[1] in as_json.stderr
