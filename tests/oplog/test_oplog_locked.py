"""Oplog chunks beyond the archiver: ``mongosnap oplog --lock-days`` writes each
chunk and its sidecar under S3 Object Lock and prune leaves the unneeded
chunks a lock holds (moto and versitygw); ``copy --with-oplog`` brings them
to a second destination. With the oplog FerretDB of the test bed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from helpers import s3_config
from oplog_support import WAIT, Writer

import mongosnap
from mongosnap.oplog import chunks
from mongosnap.oplog.archiver import ArchiverStats, archive_oplog
from mongosnap.oplog.position import Ts
from mongosnap.oplog.retention import prune_oplog
from mongosnap.storage import S3Storage


async def test_locked_chunks_are_kept_by_prune(
    s3_endpoint: Any, new_locked_bucket: Any, mongo_oplog_uri: str
) -> None:
    bucket = new_locked_bucket(s3_endpoint)
    config = s3_config(s3_endpoint)
    writer = Writer(mongo_oplog_uri, f"oplog_lock_{uuid.uuid4().hex[:10]}")
    stats = ArchiverStats()
    started = datetime.now(UTC)
    task = asyncio.create_task(
        archive_oplog(
            mongo_oplog_uri, f"s3://{bucket}/nightly", s3=config, stats=stats, interval=0.2,
            start="now", settle=0.0, lock_for=timedelta(hours=1),
        )
    )  # fmt: skip

    async def two_chunks() -> None:
        while stats.chunks < 2:
            await asyncio.to_thread(writer.write, 5)
            await asyncio.sleep(0.3)

    try:
        await asyncio.wait_for(two_chunks(), WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with S3Storage(bucket, "nightly", config) as storage:
        written = [o.key async for o in storage.list(chunks.PREFIX)]
        assert len(written) >= 4  # chunks and their sidecars
        for key in written:
            until = (await storage.stat(key)).retain_until
            assert (
                until is not None and started + timedelta(hours=1) - timedelta(seconds=1) <= until
            )

        # A kept archive's point after every chunk: all but the last are unneeded.
        pruned = await prune_oplog(storage, [Ts(2**32 - 1, 0)], dry_run=False)
        assert pruned.chunks == [] and pruned.gaps == []
        assert len(pruned.locked) >= 1
        assert [o.key async for o in storage.list(chunks.PREFIX)] == written


async def test_copy_with_oplog_brings_the_chunks(
    new_bucket: Any, testbed: Any, mongo_oplog_uri: str, tmp_path: Any
) -> None:
    """(``mongosnap copy --with-oplog``: chunk objects then sidecars, resumable.)"""
    moto = testbed.s3["moto"]
    bucket = new_bucket(moto)
    config = s3_config(moto)
    database = f"oplog_copy_{uuid.uuid4().hex[:10]}"
    writer = Writer(mongo_oplog_uri, database)
    stats = ArchiverStats()
    task = asyncio.create_task(
        archive_oplog(
            mongo_oplog_uri, f"s3://{bucket}/nightly", s3=config, stats=stats, interval=0.2,
            start="now", settle=0.0,
        )
    )  # fmt: skip

    async def two_chunks() -> None:
        while stats.chunks < 2:
            await asyncio.to_thread(writer.write, 5)
            await asyncio.sleep(0.3)

    try:
        await asyncio.wait_for(two_chunks(), WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await mongosnap.backup(mongo_oplog_uri, f"s3://{bucket}/nightly", database=database, s3=config)
    target = tmp_path / "second"
    report = await mongosnap.copy(f"s3://{bucket}/nightly", target, with_oplog=True, s3=config)
    async with S3Storage(bucket, "nightly", config) as source:
        listed = [o.key async for o in source.list(chunks.PREFIX)]
        for key in listed:
            copied = (target / key).read_bytes()
            assert copied == b"".join([c async for c in source.read(key)]), key
    assert sorted(str(p.relative_to(target)) for p in (target / "oplog").iterdir()) == listed
    assert len(report.oplog_copied) == len(listed) // 2 >= 2  # a chunk counts with its sidecar
    again = await mongosnap.copy(f"s3://{bucket}/nightly", target, with_oplog=True, s3=config)
    assert again.oplog_copied == [] and again.oplog_skipped == len(listed) // 2
