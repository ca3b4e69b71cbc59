"""prune: keep rules, the newest complete archive, incomplete debris, dry runs,
and the deletion order (sidecar first), on real backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from catalog_support import at, backup_at, get, repack_legacy
from helpers import Destination, make_destination, seed

from mongosnap import ArchiveStatus, MemoryStorage, list_archives, prune
from mongosnap._errors import BucketNotFound, StorageError, UsageError
from mongosnap.archive.manifest import manifest_key
from mongosnap.catalog import ArchiveInfo, resolve
from mongosnap.pipelines.prune import plan
from mongosnap.storage import Storage

NO_GRACE = timedelta(0)


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"users": 20, "orders": 30})
    return new_database


async def keys(storage: Storage) -> list[str]:
    return [info.key async for info in storage.list()]


async def archives_at(
    storage: Storage | Destination, uri: str, database: str, *times: datetime
) -> list[str]:
    return [await backup_at(when, uri, storage, database) for when in times]


@pytest.mark.parametrize("kind", ["local", "moto", "versitygw"])
async def test_keep_last_deletes_the_rest_with_their_sidecars(
    kind: str, tmp_path: Path, testbed: Any, new_bucket: Any, mongo_uri: str, seeded: str
) -> None:
    place = make_destination(kind, tmp_path, testbed, new_bucket)
    made = await archives_at(place, mongo_uri, seeded, at(1), at(2), at(3), at(4), at(5))

    report = await prune(place.url, keep_last=2, s3=place.s3)

    assert [a.key for a in report.kept] == [made[4], made[3]]
    assert [a.key for a in report.deleted] == [made[2], made[1], made[0]]
    assert report.bytes_freed == sum(a.size for a in report.deleted)
    storage = place.storage()
    try:
        assert sorted(await keys(storage)) == sorted(
            [made[3], manifest_key(made[3]), made[4], manifest_key(made[4])]
        )
    finally:
        await storage.aclose()
    assert report.to_dict()["deleted"] == 3


async def test_dry_run_deletes_nothing(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    await archives_at(storage, mongo_uri, seeded, at(1), at(2), at(3))
    before = await keys(storage)
    report = await prune(storage, keep_last=1, dry_run=True)
    assert report.dry_run and len(report.deleted) == 2
    assert await keys(storage) == before


async def test_keep_within_counts_back_from_the_newest_archive(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    made = await archives_at(storage, mongo_uri, seeded, at(1), at(5), at(9), at(10))
    report = await prune(storage, keep_within=timedelta(days=2))
    assert [a.key for a in report.kept] == [made[3], made[2]]
    assert [a.key for a in await list_archives(storage)] == [made[3], made[2]]


async def test_keep_daily_keeps_the_newest_of_each_day(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    made = await archives_at(
        storage, mongo_uri, seeded, at(1, 3), at(1, 15), at(2, 3), at(3, 3), at(3, 12)
    )
    report = await prune(storage, keep_daily=2)
    assert [a.key for a in report.kept] == [made[4], made[2]]
    decisions = {d.archive.key: d.reasons for d in report.decisions}
    assert decisions[made[4]] == ("keep-daily", "newest complete")
    assert decisions[made[0]] == ("no keep rule matches",)


async def test_rules_combine(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    made = await archives_at(
        storage, mongo_uri, seeded, at(1), at(2, 1), at(2, 5), at(8), at(9), at(10)
    )
    report = await prune(storage, keep_last=1, keep_within=timedelta(days=1), keep_daily=4)
    assert [a.key for a in report.kept] == [made[5], made[4], made[3], made[2]]


async def test_the_newest_complete_archive_is_always_kept(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    storage = MemoryStorage()
    old, complete = await archives_at(storage, mongo_uri, seeded, at(1), at(2))
    legacy = ["2025-01-03-03-00-00-mongodb-dump.tar.gz", "2025-01-04-03-00-00-mongodb-dump.tar.gz"]
    data = repack_legacy(await get(storage, old), tmp_path)
    for key in legacy:
        await storage.put(key, data)

    report = await prune(storage, keep_last=1)

    assert [(d.archive.key, d.reasons) for d in report.decisions if d.keep] == [
        (legacy[1], ("keep-last",)),
        (complete, ("newest complete",)),
    ]
    assert {a.key for a in report.deleted} == {legacy[0], old}  # legacy obeys the rules
    assert (await resolve(storage, "latest")).key == legacy[1]


async def test_incomplete_archives(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    made = await archives_at(storage, mongo_uri, seeded, at(1), at(2), at(3), at(4))
    for key in (made[1], made[3]):  # one older, one newer than the newest complete
        await storage.delete(manifest_key(key))

    kept = await prune(storage, keep_last=5)  # a backup may still be writing them
    assert kept.deleted == []
    assert "written too recently" in kept.decisions[2].reasons[0]

    report = await prune(storage, keep_last=5, incomplete_grace=NO_GRACE)

    assert [a.key for a in report.deleted] == [made[1]]
    assert report.decisions[0].reasons == ("incomplete, newer than the newest complete archive",)
    statuses = [(a.key, a.status) for a in await list_archives(storage)]
    assert statuses == [
        (made[3], ArchiveStatus.INCOMPLETE),
        (made[2], ArchiveStatus.COMPLETE),
        (made[0], ArchiveStatus.COMPLETE),
    ]


class FailingStorage(MemoryStorage):
    """While ``failing``, fails every archive deletion (sidecar and name-claim deletions
    go through)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self.deleted: list[str] = []

    async def delete(self, key: str) -> None:
        if key.endswith(".claim"):  # a backup's name claim: not prune's business
            return await super().delete(key)
        if self.failing and not key.endswith(".manifest.json"):
            raise StorageError(f"injected failure deleting {key}")
        self.deleted.append(key)
        await super().delete(key)


async def test_the_sidecar_goes_first(mongo_uri: str, seeded: str) -> None:
    storage = FailingStorage()
    old, new = await archives_at(storage, mongo_uri, seeded, at(1), at(2))

    with pytest.raises(StorageError, match="injected"):
        await prune(storage, keep_last=1)

    assert storage.deleted == [manifest_key(old)]
    assert await keys(storage) == [old, new, manifest_key(new)]
    stopped = (await resolve(storage, old)).status
    assert stopped is ArchiveStatus.INCOMPLETE  # no longer trusted, and next run's debris
    storage.failing = False
    report = await prune(storage, keep_last=1, incomplete_grace=NO_GRACE)
    assert [a.key for a in report.deleted] == [old]
    assert await keys(storage) == [new, manifest_key(new)]


async def test_a_keep_rule_is_required(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="keep rule"):
        await prune(tmp_path)
    with pytest.raises(UsageError):
        await prune(tmp_path, keep_last=-1)
    with pytest.raises(UsageError):
        await prune(tmp_path, keep_within=timedelta(days=-1))
    (tmp_path / "empty").mkdir()
    report = await prune(tmp_path / "empty", keep_last=0)
    assert report.decisions == []
    with pytest.raises(BucketNotFound):  # a missing directory, as a missing bucket
        await prune(tmp_path / "missing", keep_last=0)


def _info(key: str, when: datetime, status: ArchiveStatus) -> ArchiveInfo:
    return ArchiveInfo(
        key, 100, when, "gzip", status, None, modified=when, databases=frozenset({"db"})
    )


def test_plan_on_a_year_of_dailies() -> None:
    """The rules alone, on made-up listings: a year of nightly archives."""
    start = datetime(2024, 1, 1, 2, tzinfo=UTC)
    infos = [
        _info(f"{i:03d}", start + timedelta(days=i), ArchiveStatus.COMPLETE) for i in range(366)
    ]
    now = start + timedelta(days=400)
    decisions = plan(infos, None, timedelta(days=30), 7, now)
    kept = [d.archive.key for d in decisions if d.keep]
    assert kept == [f"{i:03d}" for i in range(365, 334, -1)]  # 30 days back, both ends in
    only_daily = [d.archive.key for d in plan(infos, 0, None, 7, now) if d.keep]
    assert only_daily == [f"{i:03d}" for i in range(365, 358, -1)]
