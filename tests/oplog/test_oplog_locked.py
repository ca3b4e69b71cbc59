"""``mongosnap oplog --lock-days``: each chunk and its sidecar are written
under S3 Object Lock, and prune leaves the unneeded chunks a lock holds (on
moto and versitygw, with the oplog FerretDB of the test bed)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from helpers import s3_config
from oplog_support import WAIT, Writer

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
